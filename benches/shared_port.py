"""Many SRT publishers on castway's shared SRT port against as many routes with a port each.

N routes (default 200), each an SRT input relayed to UDP at 2 Mb/s. The publishers are N
`srt-live-transmit udp://:IN srt://…` processes fed by the UDP load generator of
`benches/scale.py` (`benches/udp_load.rs`), which also receives every route's UDP output. Two
runs with the same publishers: **shared**, every publisher calling the gateway's one shared
port (`Gateway.listen_srt`) with stream ID `publish:rK` to route rK's `srt-shared://` input;
**ports**, route rK listening on a port of its own (`srt://:PK?mode=listener`). For each the
bench reads the gateway process's CPU over the measured window from /proc and the load
generator's per-stream delivery: the worst route's delivered percentage is the one that counts.

    .venv/bin/python benches/shared_port.py [--routes 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import BITRATE, Result, cpu_seconds, load_tool, make_source

import support_path  # noqa: F401
from support.net import free_ports

SERVE = """
import signal, sys, castway
mode, outs, ports = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
gw = castway.Gateway()
if mode == "shared":
    gw.listen_srt(f"127.0.0.1:{ports[0]}")
for k, o in enumerate(outs):
    uri = "srt-shared://" if mode == "shared" else f"srt://127.0.0.1:{ports[k]}?mode=listener"
    gw.add_route(f"r{k}", uri, [f"udp://127.0.0.1:{o}"])
print("ready", flush=True)
# Every publisher connected (at most 120 s) before the load starts: nothing is sent to a
# publisher that is not connected yet.
import time
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    if all((e := r["inputs"][0]["srt"]) and e["latency_ms"] > 0 for r in gw.stats()):
        break
    time.sleep(0.2)
print("connected", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
gw.close()
"""


def measure(n: int, mode: str, load: Path, source: Path, seconds: float, warmup: float,
            workdir: Path) -> Result:
    ports = free_ports(3 * n)
    ins, outs, srt_ports = ports[:n], ports[n:2 * n], ports[2 * n:]
    log = open(workdir / f"{mode}-{n}.log", "wb")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        gw = subprocess.Popen(
            [sys.executable, "-c", SERVE, mode, ",".join(map(str, outs)),
             ",".join(map(str, srt_ports))],
            stdout=subprocess.PIPE, stderr=log,
        )
        procs.append(gw)
        assert gw.stdout is not None
        if gw.stdout.readline().strip() != b"ready":
            log.flush()
            tail = (workdir / f"{mode}-{n}.log").read_text()[-2000:]
            raise RuntimeError(f"castway did not start {n} routes:\n{tail}")
        for k, i in enumerate(ins):
            target = (f"srt://127.0.0.1:{srt_ports[0]}?streamid=publish:r{k}" if mode == "shared"
                      else f"srt://127.0.0.1:{srt_ports[k]}")
            procs.append(subprocess.Popen(
                ["srt-live-transmit", "-q", f"udp://:{i}", target],
                stdout=subprocess.DEVNULL, stderr=log,
            ))
        if gw.stdout.readline().strip() != b"connected":
            raise RuntimeError("the publishers did not connect")
        generator = subprocess.Popen(
            [str(load), str(source), str(BITRATE), str(seconds), str(warmup),
             ",".join(map(str, ins)), ",".join(map(str, outs))],
            stdout=subprocess.PIPE, stderr=log,
        )
        time.sleep(warmup)  # the load generator's own warm-up: counting starts after it
        before = cpu_seconds(gw.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        after = cpu_seconds(gw.pid)
        elapsed = time.monotonic() - t0
        out, _ = generator.communicate(timeout=seconds + 60)
        if generator.returncode != 0:
            raise RuntimeError("the load generator failed")
        counts = json.loads(out)
    finally:
        for p in reversed(procs):
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
    ap.add_argument("--routes", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = load_tool()
    with tempfile.TemporaryDirectory(prefix="castway-shared-port-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.ts"
        make_source(source)
        results = {
            mode: measure(args.routes, mode, load, source, args.seconds, args.warmup, workdir)
            for mode in ("shared", "ports")
        }
    s, p = results["shared"], results["ports"]
    ratio = s.cpu_percent / p.cpu_percent if p.cpu_percent else float("nan")
    print()
    print(f"{args.routes} SRT publishers (srt-live-transmit) at {BITRATE / 1e6:.0f} Mb/s each, "
          f"SRT -> UDP on loopback, {args.seconds:.0f} s")
    print()
    print("| castway | CPU % of a core | worst / mean delivered |")
    print("| --- | ---: | ---: |")
    print(f"| one shared port (stream ID) | {s.cpu_percent:.0f} | "
          f"{s.worst_delivered:.2f}% / {s.mean_delivered:.2f}% |")
    print(f"| a port per route | {p.cpu_percent:.0f} | "
          f"{p.worst_delivered:.2f}% / {p.mean_delivered:.2f}% |")
    print()
    print(f"shared port CPU vs a port per route: {ratio:.2f}x")


if __name__ == "__main__":
    main()
