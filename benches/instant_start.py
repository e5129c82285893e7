"""Connect-to-first-decoded-frame, with instant start (the route's GOP cache) and without.

A route with one UDP input fed by a looped clip (H.264 + AAC, 640x360, 25 fps, a 2 s GOP, as
a live encoder would send it) runs throughout. Each trial starts an `ffmpeg` receiver that
listens on a UDP port and exits after decoding its first video frame, waits until it is bound,
then adds a UDP output to it on the running route (the "connect") and measures the time until
ffmpeg exits. Trials alternate between `gop_cache_bytes=0` (off: the receiver waits for the
next keyframe of the live data, half a GOP on average) and the default 1 MiB (on: the burst
starts with PAT, PMT and the last keyframe), after a random pause so the join falls anywhere
in the GOP. ffmpeg's own start-up (probing the stream) is in both figures.

    .venv/bin/python benches/instant_start.py [--trials 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import castway

import support_path  # noqa: F401
from support import wait_until
from support.clips import make_clip
from support.net import free_port
from support.senders import LiveSender

GOP_S = 2
ON_BYTES = 1 << 20


def bound(port: int) -> bool:
    """Whether some socket is bound to UDP `port` on this host (read from /proc)."""
    want = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            if line.split()[1].endswith(want):
                return True
    return False


def first_frame(route: castway.Route) -> float:
    """Seconds from adding an output to an ffmpeg receiver's first decoded video frame."""
    port = free_port()
    receiver = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-probesize", "65536", "-analyzeduration", "500000",
         "-i", f"udp://127.0.0.1:{port}?fifo_size=100000&overrun_nonfatal=1",
         "-map", "0:v", "-frames:v", "1", "-f", "null", "-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: bound(port), 10, "the receiver to listen")
        start = time.monotonic()
        oid = route.add_output(f"udp://127.0.0.1:{port}")
        receiver.wait(timeout=20)
        took = time.monotonic() - start
        route.remove_output(oid)
        return took
    finally:
        receiver.kill()
        receiver.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10, help="trials each way (default 10)")
    args = ap.parse_args()
    rng = random.Random(12)
    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp, castway.Gateway() as gw:
        clip = make_clip(Path(tmp) / "clip.ts", 20, "640x360", 1500, gop=25 * GOP_S,
                         maxrate_kbps=1500, bufsize_kbps=1500)
        data = clip.read_bytes()
        port = free_port()
        uri = f"udp://127.0.0.1:{port}"
        route = gw.add_route("bench", uri)
        sender = LiveSender(data, port, bitrate=len(data) * 8 / 20)
        try:
            wait_until(lambda: route.stats()["gop_cache"]["gops"] >= 1, 10, "a first GOP")
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.trials):
                for on in (False, True):
                    gw.update_route("bench", uri, gop_cache_bytes=ON_BYTES if on else 0)
                    # Let the cache fill again, then join anywhere in the GOP.
                    time.sleep(GOP_S + rng.uniform(0, GOP_S))
                    times[on].append(first_frame(route))
            too_large = route.stats()["gop_cache"]["too_large"]
        finally:
            sender.close()
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"connect → first decoded frame, ffmpeg receiver, {GOP_S} s GOP, "
          f"{args.trials} trials each (median, max):\n")
    print("| instant start | median s | max s | vs off |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| off (`gop_cache_bytes=0`) | {off:.2f} | {max(times[False]):.2f} | 1.00x |")
    print(f"| on (1 MiB) | {on:.2f} | {max(times[True]):.2f} | {on / off:.2f}x |")
    if too_large:
        print(f"\n{too_large} GOPs did not fit the cache")


if __name__ == "__main__":
    main()
