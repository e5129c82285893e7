"""Senders: bytes paced out in 1316-byte datagrams (once, or looped like a live encoder that
can be switched off and on), bytes paced into a process's stdin, and real live encoders
(ffmpeg remuxing a clip at real time, gst-launch-1.0 encoding a test pattern)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from support.peers import Peers
from support.ts import CHUNK


def pace(interval: float, stop: threading.Event | None = None) -> Iterator[float]:
    """Steps `interval` seconds apart on the monotonic clock, each yielded (as the time since
    the first was due) once it is due; ends when `stop` is set. A late step is not made up
    for by skipping: the next ones come at once until the schedule is met again."""
    start = time.monotonic()
    for i in itertools.count():
        if stop is not None and stop.is_set():
            return
        due = i * interval
        delay = start + due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield due


def chunks_of(data: bytes, whole: bool = False) -> list[bytes]:
    """`data` in 1316-byte chunks; with `whole`, without a shorter last one (for loops)."""
    end = len(data) - CHUNK + 1 if whole else len(data)
    return [data[o:o + CHUNK] for o in range(0, end, CHUNK)]


def paced_chunks(data: bytes, bitrate: float, send: Callable[[bytes], None],
                 stop: threading.Event | None = None, loop: bool = False) -> None:
    """Calls `send` with 1316-byte chunks of `data` at `bitrate` bits per second; with `loop`,
    whole chunks over and over until `stop` is set."""
    chunks: Iterable[bytes] = itertools.cycle(chunks_of(data, True)) if loop else chunks_of(data)
    # The chunks come first: zip ends with them, before waiting for one more step.
    for chunk, _ in zip(chunks, pace(CHUNK * 8 / bitrate, stop), strict=False):
        send(chunk)


class UdpSender:
    """Sends bytes to a UDP port at a steady bitrate, on a thread."""

    def __init__(self, data: bytes, port: int, bitrate: float = 4e6,
                 host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=paced_chunks,
            args=(data, bitrate, lambda c: self.sock.sendto(c, (host, port)), self.stop),
            daemon=True,
        )
        self.thread.start()

    def join(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "sender did not finish"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


class LiveSender:
    """Sends a clip in a loop to a UDP port at a steady rate, as a live encoder would, while
    `on(elapsed)` says so; when off, time (and the clip) runs on without sending. `sent`
    counts the bytes sent."""

    def __init__(self, data: bytes, port: int, on: Callable[[float], bool] = lambda _: True,
                 bitrate: float = 4e6, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stop = threading.Event()
        self.sent = 0
        chunks = chunks_of(data, whole=True)

        def run() -> None:
            for i, due in enumerate(pace(CHUNK * 8 / bitrate, self.stop)):
                if on(due):
                    self.sock.sendto(chunks[i % len(chunks)], (host, port))
                    self.sent += CHUNK

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


class PipeSender:
    """Writes bytes to a process's stdin at a steady bitrate (1316-byte writes), on a thread."""

    def __init__(self, proc: subprocess.Popen[bytes], data: bytes, bitrate: float = 4e6) -> None:
        assert proc.stdin is not None
        self.stdin = proc.stdin
        self.stop = threading.Event()

        def send(chunk: bytes) -> None:
            self.stdin.write(chunk)
            self.stdin.flush()

        def run() -> None:
            try:
                paced_chunks(data, bitrate, send, self.stop)
            except (BrokenPipeError, ValueError):
                pass

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 60) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "sender did not finish"


def live_sender(peers: Peers, clip: Path, url: str) -> subprocess.Popen[bytes]:
    """ffmpeg sending `clip` in a loop at real time to `url` (SRT caller or UDP), remuxed
    with continuous timestamps: a live encoder's output, at the cost of a copy."""
    return peers.start([
        "ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
        "-c", "copy", "-f", "mpegts", url,
    ])


GST_ENCODER = (
    "videotestsrc is-live=true pattern={pattern} ! video/x-raw,width=640,height=360,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate={kbps} "
    "! h264parse config-interval=-1 ! mux.sink_256 "
    "audiotestsrc is-live=true ! audioconvert ! audioresample ! avenc_aac ! aacparse "
    "! mux.sink_257 mpegtsmux name=mux alignment=7"
)


def gst_encoder(port: int, pattern: str = "ball", kbps: int = 800) -> list[str]:
    """gst-launch-1.0 encoding a live test `pattern` (640x360, 25 fps, H.264 at `kbps` with a
    1 s GOP, AAC) and calling an SRT listener on `port` with it: a live encoder."""
    return [
        "gst-launch-1.0", "-q", *GST_ENCODER.format(pattern=pattern, kbps=kbps).split(),
        "!", "srtsink", f"uri=srt://127.0.0.1:{port}?mode=caller", "wait-for-connection=false",
    ]


def gst_udp_encoder(port: int, pattern: str = "red", kbps: int = 600) -> list[str]:
    """gst-launch-1.0 encoding a live test `pattern` (320x180, 25 fps, H.264 with a 1 s GOP, no
    audio) to UDP `port`, muxed by `mpegtsmux` with its own layout: version 0 of transport
    stream 1 as ffmpeg numbers its tables, but the PMT on PID 0x20 and the video on 65 (ffmpeg:
    0x1000 and 0x100)."""
    return [
        "gst-launch-1.0", "-q", "videotestsrc", "is-live=true", f"pattern={pattern}", "!",
        "video/x-raw,width=320,height=180,framerate=25/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=25",
        f"bitrate={kbps}", "!", "h264parse", "config-interval=-1", "!",
        "mpegtsmux", "alignment=7", "!", "udpsink", "host=127.0.0.1", f"port={port}",
    ]
