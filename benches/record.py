"""Recording: castway recording N routes to disk, against N `ffmpeg -c copy -f segment`
processes and N `gst-launch-1.0 … splitmuxsink` pipelines, in the same run; and the write rate
against the disk's own (`dd` with fsync).

N routes (20) at 8 Mb/s each come from one load generator (`benches/udp_load.rs`). castway runs
the N routes in one gateway process, each UDP -> UDP (the load generator receives the outputs)
and recording 6 s TS segments; ffmpeg copies each stream into 6 s segments; gst-launch demuxes
and remuxes each (`tsdemux ! h264parse/aacparse ! splitmuxsink muxer=mpegtsmux`). For each the
bench reads the CPU time used over the measured window from /proc and the bytes written.

    make bench        (or: .venv/bin/python benches/record.py [--routes 20] [--seconds 20])
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import cpu_seconds, load_tool

import support_path  # noqa: F401
from support.clips import make_clip
from support.net import free_ports

BITRATE = 8_000_000
SEGMENT_S = 6

SERVE = """
import json, signal, sys, castway
ins, outs, root = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
segment_ms = int(sys.argv[4])
# Blocked before any thread starts, so that sigwait (not the default action) takes them.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
gw = castway.Gateway()
routes = []
for k, (i, o) in enumerate(zip(ins, outs)):
    r = gw.add_route(f"r{k}", f"udp://127.0.0.1:{i}?buffer_size=4194304", [f"udp://127.0.0.1:{o}"])
    r.recording.start(root, segment_ms=segment_ms)
    routes.append(r)
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
stats = [r.recording.stats() for r in routes]
print(json.dumps({k: sum(s[k] for s in stats) for k in ("bytes", "drops", "segments")}),
      flush=True)
gw.close()
"""


def make_source(path: Path) -> None:
    """A 1280x720 H.264 + AAC TS muxed at a constant 8 Mb/s, 20 s (looped by the load)."""
    make_clip(path, 20, "1280x720", 7000, gop=50, maxrate_kbps=7000, bufsize_kbps=3500,
              tone=1000, muxrate_kbps=8000, pcr_ms=None, timeout=600)


def peer_argv(relay: str, port: int, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    if relay == "ffmpeg":
        return ["ffmpeg", "-nostdin", "-v", "error",
                # A read timeout (µs), so that ffmpeg sees SIGTERM once the load stops.
                "-i", f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1"
                "&timeout=2000000",
                "-map", "0", "-c", "copy", "-f", "segment", "-segment_time", str(SEGMENT_S),
                "-segment_format", "mpegts", str(out / "seg%05d.ts")]
    return ["gst-launch-1.0", "-q",
            "udpsrc", f"port={port}", "buffer-size=4194304",
            "caps=video/mpegts,systemstream=true,packetsize=188", "!", "tsdemux", "name=d",
            "d.", "!", "queue", "!", "h264parse", "!", "sm.video",
            "d.", "!", "queue", "!", "aacparse", "!", "sm.audio_0",
            "splitmuxsink", "name=sm", "muxer=mpegtsmux",
            f"max-size-time={SEGMENT_S * 1_000_000_000}", f"location={out}/seg%05d.ts"]


def written(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


TAKEN: set[int] = set()


def measure(relay: str, n: int, load: Path, source: Path, seconds: float, warmup: float,
            work: Path) -> dict[str, float]:
    # Ports of their own for each recorder: none inherits a socket the last one left closing.
    ports = free_ports(2 * n, taken=TAKEN)
    ins, outs = ports[:n], ports[n:]
    root = work / relay
    root.mkdir()
    log = open(work / f"{relay}.log", "wb")
    procs: list[subprocess.Popen[bytes]] = []
    extra: dict[str, float] = {}
    try:
        if relay == "castway":
            gw = subprocess.Popen(
                [sys.executable, "-c", SERVE, ",".join(map(str, ins)), ",".join(map(str, outs)),
                 str(root), str(SEGMENT_S * 1000)], stdout=subprocess.PIPE, stderr=log)
            procs.append(gw)
            assert gw.stdout is not None
            if gw.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"castway did not start: {(work / 'castway.log').read_text()}")
        else:
            for i, port in enumerate(ins):
                procs.append(subprocess.Popen(peer_argv(relay, port, root / f"r{i}"),
                                              stdout=subprocess.DEVNULL, stderr=log))
        generator = subprocess.Popen(
            [str(load), str(source), str(BITRATE), str(seconds), str(warmup),
             ",".join(map(str, ins)), ",".join(map(str, outs))],
            stdout=subprocess.PIPE, stderr=log)
        time.sleep(warmup)
        before, w0 = sum(cpu_seconds(p.pid) for p in procs), written(root)
        t0 = time.monotonic()
        time.sleep(seconds)
        after, w1 = sum(cpu_seconds(p.pid) for p in procs), written(root)
        elapsed = time.monotonic() - t0
        generator.communicate(timeout=seconds + 60)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        # One deadline for all of them: a recorder that ignores SIGTERM is killed after it.
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            if relay == "castway" and out:
                extra = json.loads(out.decode().strip().splitlines()[-1])
        log.close()
    return {"cpu": 100 * (after - before) / elapsed, "mbps": (w1 - w0) * 8 / elapsed / 1e6,
            **extra}


def dd_rate(work: Path) -> float:
    """The disk's own sequential write rate with fsync, MB/s."""
    r = subprocess.run(["dd", "if=/dev/zero", f"of={work / 'dd'}", "bs=1M", "count=512",
                        "conv=fsync"], capture_output=True, text=True, timeout=600, check=True)
    (work / "dd").unlink()
    m = re.search(r"(\d+(?:\.\d+)?) ([kMG])B/s", r.stderr)
    if m is None:
        raise RuntimeError(f"cannot read dd's rate: {r.stderr}")
    return float(m.group(1)) * {"k": 1e-3, "M": 1.0, "G": 1e3}[m.group(2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20)
    # ffmpeg probes a UDP input for 5 s before it writes anything.
    ap.add_argument("--warmup", type=float, default=8)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (logs)")
    ap.add_argument("--relays", default="castway,ffmpeg,gst-launch")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = load_tool()
    # On disk (not a tmpfs /tmp) and outside the checkout.
    with tempfile.TemporaryDirectory(prefix="castway-record-", dir="/var/tmp") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        source = work / "source.ts"
        make_source(source)
        results = {
            relay: measure(relay, args.routes, load, source, args.seconds, args.warmup, work)
            for relay in args.relays.split(",")
        }
        disk = dd_rate(work)
    c = results.get("castway", {"cpu": 0.0, "mbps": 0.0})
    print()
    print(f"{args.routes} routes x {BITRATE / 1e6:.0f} Mb/s recorded in {SEGMENT_S} s TS "
          f"segments, {args.seconds:.0f} s measured; the disk writes {disk:.0f} MB/s (dd, fsync)")
    print()
    print("| recorder | CPU % of a core | CPU vs castway | written Mb/s |")
    print("| --- | ---: | ---: | ---: |")
    for relay, r in results.items():
        ratio = r["cpu"] / c["cpu"] if c["cpu"] else float("nan")
        print(f"| {relay} | {r['cpu']:.0f} | {ratio:.2f}x | {r['mbps']:.0f} |")
    print()
    print(f"castway: {c.get('segments', 0):.0f} segments, {c.get('drops', 0):.0f} packets "
          f"dropped; it wrote {c['mbps'] / 8:.1f} MB/s, {100 * c['mbps'] / 8 / disk:.1f}% of "
          "what the disk takes")


if __name__ == "__main__":
    main()
