"""Many routes at once: castway against the same number of srt-live-transmit processes.

N routes (50, 100, 150, 300), each UDP -> UDP at 2 Mb/s, fed by one load generator
(`benches/udp_load.rs`, Rust: one pacing thread and one receiving thread for all streams, no
Python per packet) that also receives every output. castway runs the N routes in one gateway
process; the peer is N `srt-live-transmit udp://:IN udp://127.0.0.1:OUT` processes. For each
the bench reads the CPU time the relays used over the measured window from /proc, and the
load generator reports how many bytes of each stream arrived: the worst route's delivered
percentage is the one that counts.

    make bench        (or: .venv/bin/python benches/scale.py [--counts 50,100,150,300])
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import support_path  # noqa: F401
from support.clips import make_clip
from support.net import free_ports

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
BITRATE = 2_000_000


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def make_source(path: Path) -> None:
    """A 640x360 H.264 + AAC TS muxed at a constant 2 Mb/s, 20 s (looped by the load)."""
    make_clip(path, 20, "640x360", 1500, gop=50, maxrate_kbps=1500, bufsize_kbps=750,
              tone=1000, muxrate_kbps=2000, pcr_ms=None, resend_headers=False, timeout=300)


def load_tool() -> Path:
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--no-default-features",
         "--example", "udp_load"],
        cwd=ROOT, check=True, timeout=1800,
    )
    return ROOT / "target" / "release" / "examples" / "udp_load"


SERVE = """
import signal, sys, castway
ins, outs = sys.argv[1].split(","), sys.argv[2].split(",")
gw = castway.Gateway()
for k, (i, o) in enumerate(zip(ins, outs)):
    gw.add_route(f"r{k}", f"udp://127.0.0.1:{i}", [f"udp://127.0.0.1:{o}"])
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
gw.close()
"""


@dataclass
class Result:
    cpu_percent: float
    worst_delivered: float
    mean_delivered: float


def measure(n: int, relay: str, load: Path | None, source: Path, seconds: float,
            warmup: float, workdir: Path) -> Result:
    """CPU and delivery of `n` routes under the load; with `load=None`, the CPU of `n` idle
    routes (nothing sent)."""
    ports = free_ports(2 * n)
    ins, outs = ports[:n], ports[n:]
    procs: list[subprocess.Popen[bytes]] = []
    log = open(workdir / f"{relay}-{n}.log", "wb")
    try:
        if relay == "castway":
            gw = subprocess.Popen(
                [sys.executable, "-c", SERVE, ",".join(map(str, ins)), ",".join(map(str, outs))],
                stdout=subprocess.PIPE, stderr=log,
            )
            procs.append(gw)
            assert gw.stdout is not None
            line = gw.stdout.readline()
            if line.strip() != b"ready":
                log.flush()
                tail = (workdir / f"{relay}-{n}.log").read_text()[-2000:]
                raise RuntimeError(f"castway did not start {n} routes:\n{tail}")
        else:
            for i, o in zip(ins, outs, strict=True):
                procs.append(subprocess.Popen(
                    ["srt-live-transmit", "-q", f"udp://:{i}", f"udp://127.0.0.1:{o}"],
                    stdout=subprocess.DEVNULL, stderr=log,
                ))
        generator = None if load is None else subprocess.Popen(
            [str(load), str(source), str(BITRATE), str(seconds), str(warmup),
             ",".join(map(str, ins)), ",".join(map(str, outs))],
            stdout=subprocess.PIPE, stderr=log,
        )
        time.sleep(warmup)  # the load generator's own warm-up: counting starts after it
        before = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.monotonic()
        time.sleep(seconds)
        after = sum(cpu_seconds(p.pid) for p in procs)
        elapsed = time.monotonic() - t0
        if generator is None:
            return Result(100 * (after - before) / elapsed, 100.0, 100.0)
        out, _ = generator.communicate(timeout=seconds + 60)
        if generator.returncode != 0:
            log.flush()
            tail = (workdir / f"{relay}-{n}.log").read_text()[-2000:]
            raise RuntimeError(f"the load generator failed:\n{tail}")
        counts = json.loads(out)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    delivered = [r / s if s else 0.0 for s, r in zip(counts["sent"], counts["received"],
                                                       strict=True)]
    return Result(
        cpu_percent=100 * (after - before) / elapsed,
        worst_delivered=100 * min(delivered),
        mean_delivered=100 * sum(delivered) / len(delivered),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="50,100,150,300")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--idle", type=int, default=500, help="routes in the idle run (0: none)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    # 300 srt-live-transmit processes, or 300 routes in one process, need more descriptors
    # than the usual 1024 (castway raises its own soft limit; the peers inherit this one).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = load_tool()
    with tempfile.TemporaryDirectory(prefix="castway-scale-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.ts"
        make_source(source)
        rows = []
        for n in counts:
            results = {
                relay: measure(n, relay, load, source, args.seconds, args.warmup, workdir)
                for relay in ("castway", "srt-live-transmit")
            }
            rows.append((n, results))
            c, s = results["castway"], results["srt-live-transmit"]
            print(f"{n} routes: castway {c.cpu_percent:.0f}% ({c.worst_delivered:.2f}% worst), "
                  f"srt-live-transmit {s.cpu_percent:.0f}% ({s.worst_delivered:.2f}% worst)",
                  flush=True)
        if args.idle:
            idle = {
                relay: measure(args.idle, relay, None, source, args.seconds, args.warmup,
                               workdir)
                for relay in ("castway", "srt-live-transmit")
            }
    print()
    print(f"{args.seconds:.0f} s per run, 2 Mb/s per route, UDP -> UDP on loopback")
    print()
    print("| routes | castway CPU % of a core | srt-live-transmit CPU % | CPU ratio "
          "| castway worst / mean delivered | srt-live-transmit worst / mean delivered |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, r in rows:
        c, s = r["castway"], r["srt-live-transmit"]
        ratio = c.cpu_percent / s.cpu_percent if s.cpu_percent else float("nan")
        print(f"| {n} | {c.cpu_percent:.0f} | {s.cpu_percent:.0f} | {ratio:.2f}x "
              f"| {c.worst_delivered:.2f}% / {c.mean_delivered:.2f}% "
              f"| {s.worst_delivered:.2f}% / {s.mean_delivered:.2f}% |")
    if args.idle:
        c, s = idle["castway"].cpu_percent, idle["srt-live-transmit"].cpu_percent
        print()
        print(f"{args.idle} idle routes (nothing sent): castway {c:.1f}% of a core, "
              f"srt-live-transmit {s:.1f}%")


if __name__ == "__main__":
    main()
