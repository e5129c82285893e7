"""What decoded frames cost: a castway route reading one UDP stream, with and without
`route.frames(fps=10, size=(640, 360))` consumed by Python, against
`ffmpeg -i udp://… -vf fps=10,scale=640:360 -pix_fmt rgb24 -f rawvideo -` reading the same
stream (the tool people reach for to pull frames out of a live feed).

The sender (ffmpeg -re, a 1280x720 H.264 + AAC clip at about 4 Mb/s, looped) sends to one
port per case; each reader is its own process, and its CPU seconds (user+sys, from /proc) over
the same window are compared. The castway cases run this script with `--worker`: a Gateway,
one route (UDP in, one UDP output to a discard port), and for the frames case a loop that
takes every frame as a numpy array. Everything is on loopback.

    make bench        (or: .venv/bin/python benches/notebook.py [--seconds 15] [--reps 3])
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relay import cpu_seconds, peak_rss_mb

import support_path  # noqa: F401
from support.clips import make_clip
from support.net import free_port
from support.peers import Peers
from support.senders import live_sender

FPS = 10
SIZE = (640, 360)
SETTLE_S = 8.0


def worker(port: int, frames: bool, seconds: float, report: Path) -> None:
    """A castway route on `port`; with `frames`, a consumer of every frame for `seconds`."""
    import castway

    with castway.Gateway() as gw:
        route = gw.add_route("bench", f"udp://127.0.0.1:{port}",
                             f"udp://127.0.0.1:{free_port()}", slate=False)
        route.wait_for("live", timeout=30)
        end = time.monotonic() + seconds

        def note(taken: int) -> None:
            # What the bench reads: frames taken and bytes in (a few bytes, each frame or
            # second).
            received = route.stats()["inputs"][0]["bytes"]
            report.write_text(json.dumps({"taken": taken, "bytes": received}))

        if not frames:
            while time.monotonic() < end:
                note(0)
                time.sleep(1.0)
            return
        with route.frames(fps=FPS, size=SIZE) as it:
            noted = 0.0
            while time.monotonic() < end:
                frame = it.next()
                # What a detector would at least do: look at the pixels once.
                frame.image.mean()
                if time.monotonic() - noted >= 1.0:
                    note(it.stats()["taken"])
                    noted = time.monotonic()


@dataclass
class Usage:
    cpu_s: float
    peak_rss_mb: float
    frames: int
    # What the reader received in the window (None: not known).
    mb_in: float | None


def measure(argv: list[str], port: int, source: Path, seconds: float, work: Path,
            count: Callable[[], tuple[int, int | None]]) -> Usage:
    """Starts the reader `argv` and a sender to `port`; its CPU, the frames it took and the
    bytes it received (`count`) over `seconds` after `SETTLE_S` (the castway worker runs long
    enough on its own)."""
    peers = Peers(work)
    try:
        reader = peers.start(argv)
        time.sleep(1.0)  # the reader binds its port
        live_sender(peers, source, f"udp://127.0.0.1:{port}?pkt_size=1316")
        # ffmpeg probes its input for up to 5 s, then catches up with what it buffered: the
        # window starts once every reader runs at the stream's pace.
        time.sleep(SETTLE_S)
        cpu0, (frames0, bytes0) = cpu_seconds(reader.pid), count()
        time.sleep(seconds)
        cpu, (frames, received) = cpu_seconds(reader.pid) - cpu0, count()
        mb = None if received is None or bytes0 is None else (received - bytes0) / 1e6
        return Usage(cpu, peak_rss_mb(reader.pid), frames - frames0, mb)
    finally:
        peers.stop_all(signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    ap.add_argument("--reps", type=int, default=3, help="runs per case (median is kept)")
    ap.add_argument("--worker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--frames", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.frames, args.seconds, args.report)
        return 0
    if not shutil.which("ffmpeg"):
        print("missing ffmpeg; run `make setup` first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="castway-bench-") as tmp:
        work = Path(tmp)
        source = make_clip(work / "source.ts", 20, "1280x720", 3800, fps=30, gop=60,
                           timeout=600)
        rate = source.stat().st_size * 8 / 20 / 1e6
        print(f"source: {rate:.2f} Mb/s, 1280x720 30 fps H.264 + AAC, looped by ffmpeg -re\n")

        def castway_case(frames: bool) -> Usage:
            port, report = free_port(), work / "worker.json"
            report.unlink(missing_ok=True)
            argv = [sys.executable, __file__, "--worker", str(port), "--seconds",
                    str(args.seconds + SETTLE_S + 5), "--report", str(report)]
            if frames:
                argv.append("--frames")

            def taken() -> tuple[int, int | None]:
                try:
                    doc = json.loads(report.read_text())
                    return int(doc["taken"]), int(doc["bytes"])
                except (OSError, ValueError):
                    return 0, 0

            return measure(argv, port, source, args.seconds, work, taken)

        def ffmpeg_case() -> Usage:
            port, progress = free_port(), work / "progress.txt"
            argv = ["ffmpeg", "-v", "error", "-nostdin", "-progress", str(progress),
                    "-i", f"udp://127.0.0.1:{port}?fifo_size=100000&overrun_nonfatal=1",
                    "-vf", f"fps={FPS},scale={SIZE[0]}:{SIZE[1]}", "-pix_fmt", "rgb24",
                    "-f", "rawvideo", "-y", "/dev/null"]

            def frames() -> tuple[int, int | None]:
                lines = progress.read_text().splitlines() if progress.exists() else []
                done = [int(x.split("=")[1]) for x in lines if x.startswith("frame=")]
                return (done[-1] if done else 0), None

            return measure(argv, port, source, args.seconds, work, frames)

        cases = [("castway route, no frames", lambda: castway_case(False)),
                 (f"castway route + frames(fps={FPS}, size={SIZE[0]}x{SIZE[1]})",
                  lambda: castway_case(True)),
                 (f"ffmpeg -vf fps={FPS},scale -f rawvideo", ffmpeg_case)]
        runs: dict[str, list[Usage]] = {name: [] for name, _ in cases}
        for _ in range(args.reps):
            for name, case in cases:
                runs[name].append(case())
        rows = [(n, sorted(us, key=lambda u: u.cpu_s)[len(us) // 2]) for n, us in runs.items()]
        base, frames_row, ffmpeg_row = (u for _, u in rows)
        print(f"### Decoded frames ({args.seconds:.0f} s per run, median of {args.reps})\n")
        print("| reader | CPU s | CPU % of a core | peak RSS MB | frames/s | MB in |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, u in rows:
            mb = "-" if u.mb_in is None else f"{u.mb_in:.1f}"
            print(f"| {name} | {u.cpu_s:.2f} | {100 * u.cpu_s / args.seconds:.1f} | "
                  f"{u.peak_rss_mb:.1f} | {u.frames / args.seconds:.1f} | {mb} |")
        print()
        extra = frames_row.cpu_s - base.cpu_s
        print(f"frames cost {extra:.2f} CPU s over the route alone "
              f"({frames_row.cpu_s / base.cpu_s:.2f}x the route); "
              f"castway with frames / ffmpeg: {frames_row.cpu_s / ffmpeg_row.cpu_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
