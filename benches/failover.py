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
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import castway

import support_path  # noqa: F401
from support.capture import UdpCapture
from support.clips import make_clip
from support.net import free_port
from support.peers import Peers, srt_receiver
from support.senders import gst_encoder


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
    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp, castway.Gateway() as gw:
        route = gw.add_route(
            "bench",
            {"main": f"srt://:{main_port}?mode=listener",
             "backup": f"srt://:{backup_port}?mode=listener"},
            [f"srt://:{out_port}?mode=listener"],
            loss_timeout_ms=100, failback_after_ms=1000,
        )
        peers = Peers(Path(tmp))
        peers.start(gst_encoder(backup_port, "ball", 1500))
        main = peers.start(gst_encoder(main_port, "smpte", 1500))
        cap = UdpCapture(keep=False)
        srt_receiver(peers, out_port, cap)
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
                main = peers.start(gst_encoder(main_port, "smpte", 1500))
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
            peers.stop_all()
            cap.close()
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
        clip = make_clip(Path(tmp) / "clip.ts", 60, "1280x720", 6800, fps=30, gop=60,
                         tone=1000, audio_kbps=None, resend_headers=False, timeout=600)
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
