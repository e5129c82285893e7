"""Many routes at once: castway against the same number of srt-live-transmit processes.

N routes at 2 Mb/s each, fed and received by one load generator that is the same in both
runs: castway runs the N routes in one gateway process, the peer is N srt-live-transmit
processes. Two kinds (`--kind`):

- **udp** (N = 50, 100, 150, 300): UDP -> UDP; castway's route rK is `udp://127.0.0.1:IN` ->
  `udp://127.0.0.1:OUT`, the peer `srt-live-transmit udp://:IN udp://127.0.0.1:OUT`. The load
  is `benches/udp_load.rs` (Rust: one pacing thread and one receiving thread for all streams).
  Then N = 500 idle routes (nothing sent).
- **srt** (N = 150, 300): SRT -> SRT, both ends listening, as an SRT gateway is used; castway's
  route rK is `srt://127.0.0.1:IN?mode=listener&latency=L` -> `srt://127.0.0.1:OUT?mode=
  listener&latency=L`, the peer `srt-live-transmit srt://:IN?mode=listener&latency=L
  srt://:OUT?mode=listener&latency=L`. The load is `benches/srt_load.rs` (Rust, one process
  on libsrt: N callers reading the outputs connect first, then N callers publishing, sharing
  8 local UDP ports a side; one pacing thread, one receiving thread), latency L on every
  socket (`--latency`, default 200 ms). The routes have no slate (`slate=False`): the readers
  connect before the publishers, and srt-live-transmit sends nothing of its own either.
  A third run has every route on castway's one shared SRT port (`Gateway.listen_srt`), as
  castway is meant to be used: route rK is `srt-shared://` -> `srt-shared://`, the load's
  publishers call the port with stream ID `publish:rK`, its readers with `read:rK`.

For each the bench reads the CPU time the relays used over the measured window from /proc
(all srt-live-transmit processes summed) and the load generator reports how many bytes of each
stream arrived: the worst route's delivered percentage is the one that counts. For castway it
also names its busiest thread (per-thread CPU from /proc/PID/task), so a thread that saturates
shows. The SRT load also counts continuity errors at its receivers (its publishers keep each
PID's counter running across the clip's loops).

    make bench        (runs both kinds)
    .venv/bin/python benches/scale.py [--kind udp|srt] [--counts 50,100,150,300]
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
# castway with every route on its one shared SRT port (`--kind srt` only).
SHARED = "castway, shared port"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of a process: its name and user + system CPU seconds so far."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        threads[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return threads


def busiest_threads(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                    elapsed: float, top: int = 3) -> str:
    """The `top` threads that used most CPU between two `thread_seconds`, e.g.
    `srt:rcvq 61%, srt:sndq 20%`, and how many threads there were."""
    used = sorted(((a - before.get(tid, (name, 0.0))[1], name)
                   for tid, (name, a) in after.items()), reverse=True)
    return ", ".join(f"{name} {100 * t / elapsed:.0f}%" for t, name in used[:top]) + \
        f" (of {len(after)} threads)"


def make_source(path: Path) -> None:
    """A 640x360 H.264 + AAC TS muxed at a constant 2 Mb/s, 20 s (looped by the load)."""
    make_clip(path, 20, "640x360", 1500, gop=50, maxrate_kbps=1500, bufsize_kbps=750,
              tone=1000, muxrate_kbps=2000, pcr_ms=None, resend_headers=False, timeout=300)


def load_tool(name: str = "udp_load") -> Path:
    """Builds the load generator `benches/NAME.rs` (a cargo example) and returns its path."""
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--no-default-features",
         "--example", name],
        cwd=ROOT, check=True, timeout=1800,
    )
    return ROOT / "target" / "release" / "examples" / name


SERVE = """
import signal, sys, castway
kind, latency = sys.argv[1], sys.argv[2]
ins, outs = sys.argv[3].split(","), sys.argv[4].split(",")
gw = castway.Gateway()
if kind == "shared":
    gw.listen_srt(f"127.0.0.1:{ins[0]}?latency={latency}")
for k, (i, o) in enumerate(zip(ins, outs)):
    if kind == "udp":
        gw.add_route(f"r{k}", f"udp://127.0.0.1:{i}", [f"udp://127.0.0.1:{o}"])
    elif kind == "shared":
        gw.add_route(f"r{k}", "srt-shared://", ["srt-shared://"], slate=False)
    else:
        q = f"?mode=listener&latency={latency}"
        gw.add_route(f"r{k}", f"srt://127.0.0.1:{i}{q}", [f"srt://127.0.0.1:{o}{q}"],
                     slate=False)
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
gw.close()
"""


@dataclass
class Result:
    cpu_percent: float
    worst_delivered: float
    mean_delivered: float
    # What the SRT load's receivers saw: continuity errors over all streams.
    cc_errors: int = 0
    # castway's busiest threads over the measured window (`busiest_threads`).
    busiest: str = ""
    # The load generator's own CPU over the window (% of a core).
    load_percent: float = 0.0
    # Bytes the SRT load could not send (its publisher's send buffer full), over all streams.
    unsent: int = 0


def delivery(counts: dict[str, list[int]]) -> tuple[float, float]:
    """The worst and mean percentage of what was sent that arrived, over the streams (what
    the SRT load could not send, `unsent`, counts as sent and lost)."""
    sent = [s + u for s, u in zip(counts["sent"], counts.get("unsent", [0] * len(counts["sent"])),
                                  strict=True)]
    delivered = [r / s if s else 0.0 for s, r in zip(sent, counts["received"], strict=True)]
    return 100 * min(delivered), 100 * sum(delivered) / len(delivered)


def log_tail(workdir: Path, name: str) -> str:
    return (workdir / name).read_text(errors="replace")[-2000:]


def measure(n: int, relay: str, kind: str, load: Path | None, source: Path, seconds: float,
            warmup: float, latency: int, workdir: Path) -> Result:
    """CPU and delivery of `n` routes of `kind` under the load; with `load=None`, the CPU of
    `n` idle routes (nothing sent)."""
    ports = free_ports(2 * n)
    ins, outs = ports[:n], ports[n:]
    procs: list[subprocess.Popen[bytes]] = []
    name = f"{relay}-{kind}-{n}.log"
    log = open(workdir / name, "wb")
    threads: dict[int, tuple[str, float]] = {}
    shared = relay == SHARED
    try:
        if relay in ("castway", SHARED):
            gw = subprocess.Popen(
                [sys.executable, "-c", SERVE, "shared" if shared else kind, str(latency),
                 ",".join(map(str, ins)),
                 ",".join(map(str, outs))],
                stdout=subprocess.PIPE, stderr=log,
            )
            procs.append(gw)
            assert gw.stdout is not None
            line = gw.stdout.readline()
            if line.strip() != b"ready":
                log.flush()
                raise RuntimeError(f"castway did not start {n} routes:\n"
                                   f"{log_tail(workdir, name)}")
        else:
            q = f"?mode=listener&latency={latency}"
            for i, o in zip(ins, outs, strict=True):
                uris = ([f"udp://:{i}", f"udp://127.0.0.1:{o}"] if kind == "udp"
                        else [f"srt://:{i}{q}", f"srt://:{o}{q}"])
                procs.append(subprocess.Popen(
                    ["srt-live-transmit", "-q", *uris], stdout=subprocess.DEVNULL, stderr=log,
                ))
        generator = None
        if load is not None and kind == "udp":
            generator = subprocess.Popen(
                [str(load), str(source), str(BITRATE), str(seconds), str(warmup),
                 ",".join(map(str, ins)), ",".join(map(str, outs))],
                stdout=subprocess.PIPE, stderr=log,
            )
        elif load is not None:
            # On the shared port every publisher and reader calls the one port, by stream ID
            # (from the load's 8 local ports a side: the kernel spreads callers over the
            # port's sockets by address).
            send = [ins[0]] * n if shared else ins
            recv = [ins[0]] * n if shared else outs
            by_id = (["--streamid", "publish:r{k}", "--read-streamid", "read:r{k}"]
                     if shared else [])
            generator = subprocess.Popen(
                [str(load), str(source), str(BITRATE), str(seconds), str(warmup),
                 ",".join(f"127.0.0.1:{i}" for i in send),
                 ",".join(f"srt:127.0.0.1:{o}" for o in recv), "--latency", str(latency),
                 *by_id],
                stdout=subprocess.PIPE, stderr=log,
            )
            # Its streams start once every caller is connected.
            assert generator.stdout is not None
            if generator.stdout.readline().strip() != b"connected":
                generator.wait(timeout=30)
                log.flush()
                raise RuntimeError(f"the SRT load did not connect to {relay}:\n"
                                   f"{log_tail(workdir, name)}")
        time.sleep(warmup)  # the load generator's own warm-up: counting starts after it
        before = sum(cpu_seconds(p.pid) for p in procs)
        load_before = cpu_seconds(generator.pid) if generator else 0.0
        if relay in ("castway", SHARED):
            threads = thread_seconds(procs[0].pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        after = sum(cpu_seconds(p.pid) for p in procs)
        load_used = (cpu_seconds(generator.pid) if generator else 0.0) - load_before
        elapsed = time.monotonic() - t0
        busiest = (busiest_threads(threads, thread_seconds(procs[0].pid), elapsed)
                   if relay in ("castway", SHARED) else "")
        if generator is None:
            return Result(100 * (after - before) / elapsed, 100.0, 100.0, busiest=busiest)
        out, _ = generator.communicate(timeout=seconds + 60)
        if generator.returncode != 0:
            log.flush()
            raise RuntimeError(f"the load generator failed:\n{log_tail(workdir, name)}")
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
    worst, mean = delivery(counts)
    return Result(
        cpu_percent=100 * (after - before) / elapsed,
        worst_delivered=worst,
        mean_delivered=mean,
        cc_errors=sum(counts.get("cc_errors", [])),
        busiest=busiest,
        load_percent=100 * load_used / elapsed,
        unsent=sum(counts.get("unsent", [])),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("udp", "srt"), default="udp")
    ap.add_argument("--counts", help="routes per run (udp: 50,100,150,300; srt: 150,300)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--latency", type=int, default=200,
                    help="SRT latency of every socket, ms (srt only)")
    ap.add_argument("--idle", type=int, default=None,
                    help="routes in the idle run (0: none; default 500 for udp, 0 for srt)")
    args = ap.parse_args()
    default_counts = "50,100,150,300" if args.kind == "udp" else "150,300"
    counts = [int(c) for c in (args.counts or default_counts).split(",")]
    idle_routes = args.idle if args.idle is not None else (500 if args.kind == "udp" else 0)
    # 300 srt-live-transmit processes, or 300 routes in one process, need more descriptors
    # than the usual 1024 (castway raises its own soft limit; the peers inherit this one).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load = load_tool("udp_load" if args.kind == "udp" else "srt_load")
    relays = ("castway", "srt-live-transmit") + ((SHARED,) if args.kind == "srt" else ())
    with tempfile.TemporaryDirectory(prefix="castway-scale-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.ts"
        make_source(source)
        rows = []
        for n in counts:
            results = {
                relay: measure(n, relay, args.kind, load, source, args.seconds, args.warmup,
                               args.latency, workdir)
                for relay in relays
            }
            rows.append((n, results))
            for relay, r in results.items():
                print(f"{n} routes: {relay} {r.cpu_percent:.0f}% of a core "
                      f"({r.worst_delivered:.2f}% worst delivered)"
                      + (f"; busiest threads: {r.busiest}" if r.busiest else ""), flush=True)
        if idle_routes:
            idle = {
                relay: measure(idle_routes, relay, args.kind, None, source, args.seconds,
                               args.warmup, args.latency, workdir)
                for relay in relays
            }
    what = ("UDP -> UDP" if args.kind == "udp"
            else f"SRT -> SRT (listener -> listener, latency {args.latency} ms)")
    print()
    print(f"{args.seconds:.0f} s per run, 2 Mb/s per route, {what} on loopback; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
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
    if args.kind == "srt":
        print()
        print("Every route on castway's one shared SRT port (`srt-shared://` -> `srt-shared://`,"
              " publishers `publish:rK`, readers `read:rK`), against the same srt-live-transmit "
              "processes (a port each):")
        print()
        print("| routes | castway shared port CPU % | srt-live-transmit CPU % | CPU ratio "
              "| shared port worst / mean delivered | srt-live-transmit worst / mean delivered |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for n, r in rows:
            c, s = r[SHARED], r["srt-live-transmit"]
            ratio = c.cpu_percent / s.cpu_percent if s.cpu_percent else float("nan")
            print(f"| {n} | {c.cpu_percent:.0f} | {s.cpu_percent:.0f} | {ratio:.2f}x "
                  f"| {c.worst_delivered:.2f}% / {c.mean_delivered:.2f}% "
                  f"| {s.worst_delivered:.2f}% / {s.mean_delivered:.2f}% |")
        print()
        for n, r in rows:
            for relay, x in r.items():
                print(f"{n} routes, {relay}: continuity errors at the receivers {x.cc_errors}; "
                      f"bytes the load could not send {x.unsent}; the load generator's CPU "
                      f"{x.load_percent:.0f}%" + (f"; busiest threads: {x.busiest}"
                                                   if x.busiest else ""))
    if idle_routes:
        c, s = idle["castway"].cpu_percent, idle["srt-live-transmit"].cpu_percent
        print()
        print(f"{idle_routes} idle routes (nothing sent): castway {c:.1f}% of a core, "
              f"srt-live-transmit {s:.1f}%")


if __name__ == "__main__":
    main()
