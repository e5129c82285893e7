"""How long receivers go without data when castway switches inputs, and what splicing costs.

1. Failover and failback gaps. A route with two SRT listener inputs (main, backup) fed by live
   `gst-launch-1.0` encoders (H.264 + AAC, 25 fps, 1 s GOP) and one SRT listener output read by
   an `srt-live-transmit` receiver, at `loss_timeout=100ms`, `failback_after=1000ms`. The main
   sender is killed with SIGKILL `--kills` times (default 20) and restarted each time; for each
   kill and each failback, the gap is the longest time between two datagrams at the receiver
   in the window around the switch. Printed: p50, p95, max, the receiver's normal largest gap
   for comparison, and whether the receiver's connection ever changed.
2. Splice cost: CPU seconds to pass a 7 Mb/s TS through a GStreamer pipeline untouched
   (`tsparse`), against remuxing it (`tsdemux ! h264parse/aacparse ! mpegtsmux`), the other way
   to give receivers one continuous stream. castway splices in place instead (see
   docs/architecture.md).

    .venv/bin/python benches/failover.py [--kills 20]
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import castway

ENCODER = (
    "videotestsrc is-live=true pattern={pattern} ! video/x-raw,width=640,height=360,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=1500 "
    "! h264parse config-interval=-1 ! mux.sink_256 "
    "audiotestsrc is-live=true ! audioconvert ! audioresample ! avenc_aac ! aacparse "
    "! mux.sink_257 mpegtsmux name=mux alignment=7 "
    "! srtsink uri=srt://127.0.0.1:{port}?mode=caller wait-for-connection=false"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Capture:
    """Arrival times of the datagrams a receiver forwards to a loopback UDP port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.times: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sock.recv(65536)
            except TimeoutError:
                continue
            self.times.append(time.monotonic())

    def gap(self, start: float, end: float) -> float:
        ts = [t for t in self.times if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(ts)), default=end - start)


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def encoder(port: int, pattern: str) -> subprocess.Popen[bytes]:
    return start(["gst-launch-1.0", "-q", *ENCODER.format(port=port, pattern=pattern).split()])


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"failover bench: timed out waiting for {what}")
        time.sleep(0.01)


def addresses(route: castway.Route) -> list[str]:
    """The receiver's address at the output: a reconnect would show as a new port."""
    srt = route.stats()["outputs"][0]["srt"] or {}
    return [c["address"] for c in srt.get("callers", [])]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def gaps(kills: int) -> None:
    main_port, backup_port, out_port = free_port(), free_port(), free_port()
    with castway.Gateway() as gw:
        route = gw.add_route(
            "bench",
            {"main": f"srt://:{main_port}?mode=listener",
             "backup": f"srt://:{backup_port}?mode=listener"},
            [f"srt://:{out_port}?mode=listener"],
            loss_timeout_ms=100, failback_after_ms=1000,
        )
        procs = [encoder(backup_port, "ball")]
        main = encoder(main_port, "smpte")
        cap = Capture()
        procs.append(start([
            "srt-live-transmit", "-q", f"srt://127.0.0.1:{out_port}?mode=caller",
            f"udp://127.0.0.1:{cap.port}",
        ]))
        try:
            wait_for(lambda: all(i["healthy"] for i in route.stats()["inputs"]), 30, "inputs")
            wait_for(lambda: len(cap.times) > 500, 30, "the receiver")
            t0 = time.monotonic()
            time.sleep(3)
            normal = cap.gap(t0, time.monotonic())
            callers = addresses(route)
            failover: list[float] = []
            failback: list[float] = []
            seq = route.stats()["switch"]["history"][-1]["seq"] if route.stats()["switch"][
                "history"] else 0
            for k in range(kills):
                killed = time.monotonic()
                os.killpg(main.pid, signal.SIGKILL)
                main.wait()
                ev = route.wait_switch(seq, 10)
                assert ev and ev["to"] == "backup", ev
                seq = ev["seq"]
                time.sleep(1.0)
                failover.append(cap.gap(killed - 0.2, time.monotonic()))
                wait_for(
                    lambda: route.stats()["inputs"][0]["state"] == "listening", 15, "main reopen"
                )
                main = encoder(main_port, "smpte")
                ev = route.wait_switch(seq, 15)
                assert ev and ev["reason"] == "failback", ev
                seq = ev["seq"]
                back = time.monotonic()
                wait_for(lambda: route.stats()["switch"]["active"] == "main", 5, "the cut")
                time.sleep(1.0)
                failback.append(cap.gap(back - 0.2, time.monotonic()))
                print(f"  kill {k + 1:2}: failover gap {failover[-1] * 1000:6.0f} ms, "
                      f"failback gap {failback[-1] * 1000:5.0f} ms", flush=True)
            same = addresses(route) == callers
        finally:
            for p in [*procs, main]:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            cap.stop.set()
    print(f"\nfailover (SIGKILL of main, loss_timeout=100ms), {kills} kills:")
    print(f"  gap p50 {pct(failover, .5) * 1000:.0f} ms, p95 {pct(failover, .95) * 1000:.0f} ms, "
          f"max {max(failover) * 1000:.0f} ms")
    print(f"failback (main healthy 1 s, cut at its keyframe), {kills} times:")
    print(f"  gap p50 {pct(failback, .5) * 1000:.0f} ms, p95 {pct(failback, .95) * 1000:.0f} ms, "
          f"max {max(failback) * 1000:.0f} ms")
    print(f"receiver's largest gap with no switch: {normal * 1000:.0f} ms")
    print(f"receiver disconnects: {0 if same else 'the caller changed'}")


def cpu_of(argv: list[str]) -> float:
    before = os.times()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=600)
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system)


def splice_cost() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.ts"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
             "-i", "testsrc2=size=1280x720:rate=30:duration=60",
             "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=60",
             "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6800k", "-g", "60",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts", str(clip)],
            check=True, timeout=600,
        )
        base = ["gst-launch-1.0", "-q", "filesrc", f"location={clip}", "!"]
        passthrough = min(cpu_of([*base, "tsparse", "!", "fakesink"]) for _ in range(3))
        remux = min(
            cpu_of([*base, "tsdemux", "name=d", "d.", "!", "h264parse", "!", "queue", "!",
                    "mpegtsmux", "name=m", "!", "fakesink", "d.", "!", "aacparse", "!",
                    "queue", "!", "m."])
            for _ in range(3)
        )
    print("\nsplice cost, 60 s of 7 Mb/s TS (CPU seconds, best of 3):")
    print(f"  passthrough (tsparse)                 {passthrough:.2f} s")
    print(f"  remux (tsdemux ! parse ! mpegtsmux)   {remux:.2f} s  ({remux / passthrough:.1f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    args = ap.parse_args()
    gaps(args.kills)
    splice_cost()
    return 0


if __name__ == "__main__":
    sys.exit(main())
