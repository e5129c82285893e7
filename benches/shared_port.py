"""Many SRT publishers on castway's shared SRT port against as many routes with a port each.

N routes (default 200), each an SRT input relayed to UDP at 2 Mb/s. The publishers are the N
SRT callers of one process, the SRT load generator of `benches/scale.py`
(`benches/srt_load.rs`: Rust on libsrt, its callers sharing 32 local UDP ports, one pacing
thread), which also receives every route's UDP output; N srt-live-transmit publisher processes
would load the machine more than the gateway they feed. Two runs with the same load:
**shared**, every publisher calling the gateway's one shared port (`Gateway.listen_srt`) with
stream ID `publish:rK` to route rK's `srt-shared://` input; **ports**, route rK listening on a
port of its own (`srt://:PK?mode=listener`). Every socket has libsrt's default latency, 120 ms
(`--latency`); the routes have no slate (`slate=False`: what arrives is what was published).
For each the bench reads the gateway process's CPU over the measured window
from /proc, its busiest threads (per-thread CPU from /proc/PID/task: on the shared port every
publisher comes in through one UDP socket, which libsrt serves with one receiving thread,
`srt:rcvq`), and the load generator's per-stream delivery: the worst route's delivered
percentage is the one that counts.

    .venv/bin/python benches/shared_port.py [--routes 200] [--seconds 20]
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
from pathlib import Path

from scale import (
    BITRATE,
    Result,
    busiest_threads,
    cpu_seconds,
    delivery,
    load_tool,
    log_tail,
    make_source,
    thread_seconds,
)

import support_path  # noqa: F401
from support.net import free_ports

# Local UDP ports the load's publishers share: the kernel spreads callers over the shared
# port's sockets by address, so they need many (as publishers on many hosts would be).
GROUPS = 32

SERVE = """
import signal, sys, castway
mode, latency = sys.argv[1], sys.argv[2]
outs, ports = sys.argv[3].split(","), sys.argv[4].split(",")
gw = castway.Gateway()
if mode == "shared":
    gw.listen_srt(f"127.0.0.1:{ports[0]}?latency={latency}")
for k, o in enumerate(outs):
    uri = ("srt-shared://" if mode == "shared"
           else f"srt://127.0.0.1:{ports[k]}?mode=listener&latency={latency}")
    gw.add_route(f"r{k}", uri, [f"udp://127.0.0.1:{o}"], slate=False)
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
            latency: int, workdir: Path) -> Result:
    ports = free_ports(2 * n)
    outs, srt_ports = ports[:n], ports[n:]
    name = f"{mode}-{n}.log"
    log = open(workdir / name, "wb")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        gw = subprocess.Popen(
            [sys.executable, "-c", SERVE, mode, str(latency), ",".join(map(str, outs)),
             ",".join(map(str, srt_ports))],
            stdout=subprocess.PIPE, stderr=log,
        )
        procs.append(gw)
        assert gw.stdout is not None
        if gw.stdout.readline().strip() != b"ready":
            log.flush()
            raise RuntimeError(f"castway did not start {n} routes:\n{log_tail(workdir, name)}")
        targets = ([f"127.0.0.1:{srt_ports[0]}"] * n if mode == "shared"
                   else [f"127.0.0.1:{p}" for p in srt_ports])
        streamid = ["--streamid", "publish:r{k}"] if mode == "shared" else []
        generator = subprocess.Popen(
            [str(load), str(source), str(BITRATE), str(seconds), str(warmup), ",".join(targets),
             ",".join(f"udp:{o}" for o in outs), "--latency", str(latency), "--groups",
             str(GROUPS), *streamid],
            stdout=subprocess.PIPE, stderr=log,
        )
        procs.append(generator)
        assert generator.stdout is not None
        if (generator.stdout.readline().strip() != b"connected"
                or gw.stdout.readline().strip() != b"connected"):
            log.flush()
            raise RuntimeError(f"the publishers did not connect:\n{log_tail(workdir, name)}")
        time.sleep(warmup)  # the load generator's own warm-up: counting starts after it
        before, threads = cpu_seconds(gw.pid), thread_seconds(gw.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        after = cpu_seconds(gw.pid)
        elapsed = time.monotonic() - t0
        busiest = busiest_threads(threads, thread_seconds(gw.pid), elapsed)
        out, _ = generator.communicate(timeout=seconds + 60)
        if generator.returncode != 0:
            log.flush()
            raise RuntimeError(f"the load generator failed:\n{log_tail(workdir, name)}")
        counts = json.loads(out)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    worst, mean = delivery(counts)
    return Result(
        cpu_percent=100 * (after - before) / elapsed,
        worst_delivered=worst,
        mean_delivered=mean,
        cc_errors=sum(counts["cc_errors"]),
        busiest=busiest,
        unsent=sum(counts["unsent"]),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--latency", type=int, default=120, help="SRT latency of every socket, ms")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = load_tool("srt_load")
    with tempfile.TemporaryDirectory(prefix="castway-shared-port-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.ts"
        make_source(source)
        results = {
            mode: measure(args.routes, mode, load, source, args.seconds, args.warmup,
                           args.latency, workdir)
            for mode in ("shared", "ports")
        }
    s, p = results["shared"], results["ports"]
    ratio = s.cpu_percent / p.cpu_percent if p.cpu_percent else float("nan")
    print()
    print(f"{args.routes} SRT publishers (one srt_load process) at {BITRATE / 1e6:.0f} Mb/s each, "
          f"SRT -> UDP on loopback, latency {args.latency} ms, {args.seconds:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print("| castway | CPU % of a core | worst / mean delivered |")
    print("| --- | ---: | ---: |")
    print(f"| one shared port (stream ID) | {s.cpu_percent:.0f} | "
          f"{s.worst_delivered:.2f}% / {s.mean_delivered:.2f}% |")
    print(f"| a port per route | {p.cpu_percent:.0f} | "
          f"{p.worst_delivered:.2f}% / {p.mean_delivered:.2f}% |")
    print()
    print(f"shared port CPU vs a port per route: {ratio:.2f}x")
    for mode, r in results.items():
        print(f"{mode}: continuity errors at the receivers {r.cc_errors}, bytes the load could "
              f"not send {r.unsent}; castway's busiest threads: {r.busiest}")


if __name__ == "__main__":
    main()
