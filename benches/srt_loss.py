"""SRT through a lossy link: castway vs srt-live-transmit, in the same run.

A looped clip (ffmpeg -re, SRT caller) reaches the relay's SRT listener input through the
userspace impairment proxy (`support.impair`: this kernel has no netem) with 5 % and then 10 %
loss and 20 +- 5 ms of delay each way; the relay (castway relay, or srt-live-transmit) sends what
it receives to a UDP capture, whose continuity counters are then checked as a TR 101 290
analyser does. The relay's receive latency is 4 x the nominal RTT or more (250 ms for ~45 ms).
The goal is issue 12's: zero CC errors at the receiver, as srt-live-transmit in the same run.

    .venv/bin/python benches/srt_loss.py [--seconds 60] [--latency 250]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import support_path  # noqa: F401
from support.capture import UdpCapture
from support.clips import make_clip
from support.impair import Impairment, ImpairProxy
from support.net import free_port
from support.peers import Peers
from support.senders import live_sender
from support.ts import ts_continuity

CASTWAY = str(Path(sys.executable).with_name("castway"))


def run(relay: str, loss: float, seconds: float, latency: int, clip: Path,
        work: Path) -> dict[str, float]:
    """One relay through one impairment for `seconds`; the receiver's figures."""
    port = free_port()
    cap = UdpCapture()
    peers = Peers(work)
    src = f"srt://:{port}?mode=listener&latency={latency}"
    dst = f"udp://127.0.0.1:{cap.port}"
    argv = ([CASTWAY, "relay", "-i", src, "-o", dst] if relay == "castway"
            else ["srt-live-transmit", "-q", src, dst])
    impairment = Impairment(loss=loss, delay_ms=20, jitter_ms=5, seed=12)
    try:
        peers.start(argv)
        time.sleep(1)  # the relay's listener comes up (a bench, not a test)
        with ImpairProxy(port, impairment, seconds=seconds + 30,
                         max_packets=10**8) as proxy:
            live_sender(peers, clip, f"srt://127.0.0.1:{proxy.port}?mode=caller"
                        f"&latency={latency * 1000}&pkt_size=1316")
            time.sleep(seconds)
            dropped = proxy.counts.dropped
        figures = ts_continuity(cap.data)
        return {"packets": figures["packets"], "cc_errors": figures["cc_errors"],
                "dropped_by_link": dropped}
    finally:
        peers.stop_all()
        cap.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="time per run")
    ap.add_argument("--latency", type=int, default=250, help="receive latency, ms")
    args = ap.parse_args()
    for tool in ("ffmpeg", "srt-live-transmit"):
        if not shutil.which(tool):
            print(f"{tool} is missing", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="castway-srt-loss-") as tmp:
        work = Path(tmp)
        clip = make_clip(work / "clip.ts", 20, "640x360", 2000, gop=50)
        print(f"### SRT through a lossy link ({args.seconds:.0f} s per run, latency "
              f"{args.latency} ms, 20 +- 5 ms each way)\n")
        print("| loss | relay | TS packets received | CC errors | datagrams lost on the link |")
        print("| ---: | --- | ---: | ---: | ---: |")
        for loss in (0.05, 0.10):
            for relay in ("castway", "srt-live-transmit"):
                r = run(relay, loss, args.seconds, args.latency, clip, work)
                print(f"| {loss:.0%} | {relay} | {r['packets']:.0f} | {r['cc_errors']:.0f} | "
                      f"{r['dropped_by_link']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
