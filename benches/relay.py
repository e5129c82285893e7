"""Relay and fan-out cost of castway against the tools people use today, in the same run.

1. SRT -> SRT relay of one ~7 Mb/s stream: `castway relay` vs `srt-live-transmit` (and, for
   reference, a bare `gst-launch-1.0 srtsrc ! srtsink`, the floor for GStreamer's SRT elements).
2. SRT -> 10 x SRT fan-out: `castway relay` with 10 listener outputs (10 ports) vs a
   `gst-launch-1.0` pipeline with `tee` and a leaky `queue` per branch; and, as a second
   castway row, one listener output that the 10 receivers all call (one port: one libsrt
   sending and receiving thread for all ten; docs/architecture.md says why it costs less).

The relays of a table run side by side, each with its own sender (ffmpeg -re, paced) and
receivers (srt-live-transmit callers writing to files), and are measured over the same
seconds: runs one after the other differ with the machine's load by more than the relays do.
A relay's CPU time is the sum of its threads' `schedstat` run time (nanoseconds; `/proc/PID/
stat` counts 10 ms ticks); peak RSS is `VmHWM`; MB delivered is what the receivers wrote while
measured. Everything is on loopback.

    make bench        (or: .venv/bin/python benches/relay.py [--seconds 15] [--reps 3])
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import support_path  # noqa: F401
from support.clips import make_clip
from support.net import free_port
from support.peers import Peers
from support.senders import live_sender

CASTWAY = str(Path(sys.executable).with_name("castway"))
TICKS = os.sysconf("SC_CLK_TCK")


def make_source(path: Path, seconds: int) -> None:
    """A 1280x720 H.264 + AAC TS at about 7 Mb/s (encoded once, then only copied)."""
    make_clip(path, seconds, "1280x720", 6800, fps=30, gop=60, maxrate_kbps=6800,
              bufsize_kbps=3400, tone=1000, audio_kbps=128, resend_headers=False, timeout=600)


@dataclass
class Usage:
    cpu_s: float
    peak_rss_mb: float
    received_mb: float


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in seconds, to the nanosecond: the first field of
    each thread's `schedstat` (`/proc/PID/stat` counts in 10 ms ticks, and a relay costs a
    few dozen of them a run)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            pass  # a thread that ended between the listing and the read
    return total / 1e9


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Running:
    """A relay started with its receivers and sender."""
    relay: subprocess.Popen[bytes]
    sinks: list[Path]


def start(peers: Peers, relay_argv: list[str], in_port: int, out_ports: list[int],
          source: Path, workdir: Path, name: str) -> Running:
    """Starts the relay, its receivers (srt-live-transmit callers writing to files) and its
    sender (ffmpeg -re)."""
    relay = peers.start(relay_argv)
    wait_listening(relay, in_port)
    sinks = []
    for i, port in enumerate(out_ports):
        out = workdir / f"{name}-recv{i}.ts"
        sinks.append(out)
        peers.start(["srt-live-transmit", "-q", f"srt://127.0.0.1:{port}", "file://con"],
                    stdout_path=out)
    live_sender(peers, source, f"srt://127.0.0.1:{in_port}?pkt_size=1316")
    return Running(relay, sinks)


def wait_listening(relay: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> None:
    """Returns once a UDP socket is bound to `port` (the relay's SRT input listens)."""
    hexport = f":{port:04X} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.poll() is not None:
            raise RuntimeError(f"relay exited with {relay.returncode}")
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            if any(hexport in line.split(None, 2)[1] + " "
                   for line in Path(table).read_text().splitlines()[1:]):
                return
        time.sleep(0.05)
    raise RuntimeError(f"relay not listening on UDP port {port} after {timeout:.0f} s")


# A relay: its name, its command line (from the input's port and the outputs' ports) and
# whether its receivers all call the first output port (one listener output for all).
Case = tuple[str, Callable[[int, list[int]], list[str]], bool]


def castway_argv(a: int, outs: list[int]) -> list[str]:
    argv = [CASTWAY, "relay", "--stats-interval", "0", "-i", f"srt://:{a}?mode=listener"]
    for p in outs:
        argv += ["-o", f"srt://:{p}?mode=listener"]
    return argv


def castway_one_listener_argv(a: int, outs: list[int]) -> list[str]:
    return castway_argv(a, outs[:1])


def slt_argv(a: int, outs: list[int]) -> list[str]:
    return ["srt-live-transmit", "-q", f"srt://:{a}?mode=listener",
            f"srt://:{outs[0]}?mode=listener"]


def gst_relay_argv(a: int, outs: list[int]) -> list[str]:
    return ["gst-launch-1.0", "-q", "srtsrc", f"uri=srt://:{a}?mode=listener", "!", "srtsink",
            f"uri=srt://:{outs[0]}?mode=listener", "wait-for-connection=false", "sync=false",
            "async=false"]


def tee_argv(a: int, outs: list[int]) -> list[str]:
    gst = ["gst-launch-1.0", "-q", "srtsrc", f"uri=srt://:{a}?mode=listener", "!", "tee",
           "name=t", "allow-not-linked=true"]
    for p in outs:
        gst += ["t.", "!", "queue", "leaky=downstream", "max-size-time=0", "max-size-buffers=0",
                "max-size-bytes=2097152", "!", "srtsink", f"uri=srt://:{p}?mode=listener",
                "wait-for-connection=false", "sync=false", "async=false"]
    return gst


def compare(cases: list[Case], n_out: int, source: Path, seconds: float, reps: int,
            workdir: Path) -> list[tuple[str, Usage, list[float]]]:
    """Runs the cases side by side, `reps` rounds, and keeps each case's median run (by CPU)
    and its CPU against the second case's in each round.
    All relays of a round run at the same time, each with its own sender and receivers, and
    are measured over the same seconds: runs one after the other differ with the machine's
    load by more than the relays differ, runs side by side see the same load. Round r starts
    case r first (so with as many rounds as cases each is first once)."""
    runs: dict[str, list[Usage]] = {name: [] for name, _, _ in cases}
    for _ in range(reps):
        peers = Peers(workdir)
        try:
            running: dict[str, Running] = {}
            # No relay always starts first: the order moved the figures by a few percent in
            # some runs.
            k = len(runs[cases[0][0]]) % len(cases)
            for name, argv, one_port in cases[k:] + cases[:k]:
                a, outs = free_port(), [free_port() for _ in range(n_out)]
                receivers = [outs[0]] * n_out if one_port else outs
                running[name] = start(peers, argv(a, outs), a, receivers, source, workdir,
                                      f"{len(running)}")
            time.sleep(2.0)  # connections settle
            cpu0 = {name: cpu_seconds(r.relay.pid) for name, r in running.items()}
            size0 = {name: sum(s.stat().st_size for s in r.sinks) for name, r in running.items()}
            time.sleep(seconds)
            for name, r in running.items():
                cpu = cpu_seconds(r.relay.pid) - cpu0[name]
                received = (sum(s.stat().st_size for s in r.sinks) - size0[name]) / 1e6
                runs[name].append(Usage(cpu, peak_rss_mb(r.relay.pid), received))
        finally:
            peers.stop_all(signal.SIGINT)
    base = runs[cases[1][0]]
    return [(name, sorted(us, key=lambda u: u.cpu_s)[len(us) // 2],
             [u.cpu_s / b.cpu_s if b.cpu_s else float("nan")
              for u, b in zip(us, base, strict=True)])
            for name, us in runs.items()]


def table(title: str, rows: list[tuple[str, Usage, list[float]]], seconds: float,
          reps: int) -> str:
    base = rows[1][1]
    lines = [f"### {title} ({seconds:.0f} s side by side, median of {reps} rounds)", "",
             "| relay | CPU s | CPU % of a core | peak RSS MB | MB delivered | CPU ratio "
             "| ratio in each round |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, u, rounds in rows:
        ratio = u.cpu_s / base.cpu_s if base.cpu_s else float("nan")
        each = ", ".join(f"{r:.2f}x" for r in rounds)
        lines.append(f"| {name} | {u.cpu_s:.3f} | {100 * u.cpu_s / seconds:.1f} | "
                     f"{u.peak_rss_mb:.1f} | {u.received_mb:.1f} | {ratio:.2f}x | {each} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    ap.add_argument("--reps", type=int, default=3, help="rounds (each relay's median is kept)")
    args = ap.parse_args()
    for tool in ("ffmpeg", "srt-live-transmit", "gst-launch-1.0"):
        if not shutil.which(tool):
            print(f"missing {tool}; run `make setup` first", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp:
        work = Path(tmp)
        source = work / "source.ts"
        make_source(source, 30)
        rate = source.stat().st_size * 8 / 30 / 1e6
        print(f"source: {rate:.2f} Mb/s, 1280x720 H.264 + AAC, looped by ffmpeg -re\n")
        relay = compare([("castway relay", castway_argv, False),
                         ("srt-live-transmit", slt_argv, False),
                         ("gst-launch srtsrc ! srtsink", gst_relay_argv, False)],
                        1, source, args.seconds, args.reps, work)
        print(table("SRT -> SRT relay, one stream", relay, args.seconds, args.reps), flush=True)
        print()
        fanout = compare([("castway relay 1->10", castway_argv, False),
                          ("gst-launch tee 1->10", tee_argv, False),
                          ("castway relay 1->10, 1 listener output, 10 callers",
                           castway_one_listener_argv, True)],
                         10, source, args.seconds, args.reps, work)
        print(table("SRT -> 10 x SRT fan-out", fanout, args.seconds, args.reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
