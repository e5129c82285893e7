"""Shared helpers: free ports, real peers as subprocesses, paced senders, captures, TS checks.

Every wait is a polled condition with a deadline; every peer is killed at teardown.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

# A GLib/GStreamer critical warning (a refcount bug, a misuse of an element) aborts the process
# that hits it, so the tests cannot pass over one. Set before castway loads GLib.
os.environ.setdefault("G_DEBUG", "fatal-criticals")


import castway

TS = 188
CHUNK = 7 * TS


def free_port() -> int:
    """A UDP port nothing is bound to right now (SRT runs over UDP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Polls `predicate` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Peers:
    """Starts real peer processes and kills whatever is left at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self._n = 0

    def start(
        self, argv: list[str], stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout_path: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        self._n += 1
        log = open(self.tmp / f"peer{self._n}-{Path(argv[0]).name}.log", "wb")
        out: int | IO[bytes] = open(stdout_path, "wb") if stdout_path else log
        p = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=log, start_new_session=True)
        self.procs.append(p)
        return p

    def log(self, p: subprocess.Popen[bytes]) -> str:
        i = self.procs.index(p) + 1
        return next(self.tmp.glob(f"peer{i}-*.log")).read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    ps = Peers(tmp_path)
    yield ps
    ps.stop_all()


@pytest.fixture
def gateway() -> Iterator[castway.Gateway]:
    with castway.Gateway() as gw:
        yield gw


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


def make_clip(path: Path, seconds: int, size: str, video_kbps: int, *,
              picture: str = "testsrc2", tone: int = 440, gop: int = 25,
              muxrate_kbps: int | None = None, pcr_ms: int = 10) -> Path:
    """An H.264 + AAC MPEG-TS made by ffmpeg: a 25 fps lavfi `picture`, a GOP of `gop` frames,
    a sine `tone`. With `muxrate_kbps` the mux is constant-rate, as broadcast encoders send it:
    null packets, and PCR-only packets (adaptation field, no payload) on the video PID, a PCR
    every `pcr_ms`."""
    cbr = ["-muxrate", f"{muxrate_kbps}k", "-pcr_period", str(pcr_ms)] if muxrate_kbps else []
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"{picture}=size={size}:rate=25",
            "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop),
            "-b:v", f"{video_kbps}k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
            "-f", "mpegts", *cbr, "-mpegts_flags", "+resend_headers", str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def ts_file(media_dir: Path) -> Path:
    """An 8 s clip at about 1.5 Mb/s."""
    return make_clip(media_dir / "clip.ts", 8, "640x360", 1200)


@pytest.fixture(scope="session")
def short_clip(media_dir: Path) -> Path:
    """A 2 s clip, for loops."""
    return make_clip(media_dir / "short.ts", 2, "320x180", 600)


# Linux's SO_RCVBUFFORCE (Python's socket module does not name it).
SO_RCVBUFFORCE = 33


class UdpCapture:
    """Receives datagrams on a loopback port into memory, on a thread."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Past net.core.rmem_max when allowed (root): a starved test must not lose data
            # in its own receiver.
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * 1024 * 1024)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind((host, port or 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(0.1)
        self.chunks: list[bytes] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.chunks.append(data)
            self.times.append(time.monotonic())

    @property
    def data(self) -> bytes:
        return b"".join(list(self.chunks))

    @property
    def size(self) -> int:
        return sum(len(c) for c in list(self.chunks))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def udp_capture() -> Iterator[Callable[..., UdpCapture]]:
    made: list[UdpCapture] = []

    def make(port: int | None = None, host: str = "127.0.0.1") -> UdpCapture:
        c = UdpCapture(port, host)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def paced_chunks(data: bytes, bitrate: float, send: Callable[[bytes], None],
                 stop: threading.Event | None = None) -> None:
    """Calls `send` with 1316-byte chunks of `data` at `bitrate` bits per second."""
    interval = CHUNK * 8 / bitrate
    start = time.monotonic()
    for i, off in enumerate(range(0, len(data), CHUNK)):
        if stop is not None and stop.is_set():
            return
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(data[off:off + CHUNK])


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


def random_ts(packets: int, seed: int = 1) -> bytes:
    """Valid-looking TS packets (sync byte, PID 0x100, counting CC) with random payloads."""
    rnd = __import__("random").Random(seed)
    out = bytearray()
    for i in range(packets):
        out += bytes([0x47, 0x01, 0x00, 0x10 | (i & 0x0F)]) + rnd.randbytes(TS - 4)
    return bytes(out)


def decode_errors(path: Path, timeout: float = 60) -> str:
    """What `ffmpeg -v error` says while decoding the file fully (empty: clean)."""
    r = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, timeout=timeout, check=False,
    )
    return r.stderr.decode(errors="replace").strip()


def from_first_keyframe(data: bytes, path: Path) -> Path:
    """Writes `data` to `path` cut at the first TS packet that starts an H.264 IDR access unit
    (random_access_indicator set), so a capture joined mid-stream decodes from its first
    keyframe."""
    for off in range(0, len(data) - TS + 1, TS):
        if is_random_access(data[off:off + TS]):
            path.write_bytes(data[off:])
            return path
    raise AssertionError("no random access point in the capture")


def is_random_access(p: bytes) -> bool:
    """A TS packet whose adaptation field has random_access_indicator (an H.264 IDR starts)."""
    return bool(p[0] == 0x47 and p[3] & 0x20 and p[4] > 0 and p[5] & 0x40)


def whole_gops(data: bytes, path: Path) -> Path:
    """Writes the part of a capture from its first to its last random access point, so a
    capture joined and left mid-stream holds whole GOPs only."""
    offsets = range(0, len(data) - TS + 1, TS)
    starts = [off for off in offsets if is_random_access(data[off:off + TS])]
    assert len(starts) >= 2, "fewer than two random access points in the capture"
    path.write_bytes(data[starts[0]:starts[-1]])
    return path


def ts_continuity(data: bytes) -> dict[str, int]:
    """Counts continuity-counter errors and backward PCR jumps in a TS capture, as a TR 101 290
    analyser does (ISO/IEC 13818-1 2.4.3.3): a packet with payload counts up by one (or repeats
    once, a duplicate); a packet without payload repeats the last counter of its PID; a
    discontinuity_indicator starts the count over. `pcr_jumps` counts PCR steps forward of more
    than 0.7 s (a clock a splice placed wrongly; ISO 13818-1 wants one every 100 ms)."""
    last_cc: dict[int, int] = {}
    last_pcr: int | None = None
    pcr_pid: int | None = None
    cc_errors = pcr_back = pcr_jumps = packets = 0
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if p[0] != 0x47:
            cc_errors += 1
            continue
        packets += 1
        pid = ((p[1] & 0x1F) << 8) | p[2]
        has_af, has_payload = bool(p[3] & 0x20), bool(p[3] & 0x10)
        cc = p[3] & 0x0F
        discontinuity = has_af and p[4] > 0 and bool(p[5] & 0x80)
        if pid != 0x1FFF and pid in last_cc and not discontinuity:
            last = last_cc[pid]
            ok = cc in ((last + 1) & 0x0F, last) if has_payload else cc == last
            cc_errors += not ok
        if pid != 0x1FFF and (has_payload or pid not in last_cc or discontinuity):
            last_cc[pid] = cc
        if has_af and p[4] >= 7 and p[5] & 0x10:
            base = (p[6] << 25) | (p[7] << 17) | (p[8] << 9) | (p[9] << 1) | (p[10] >> 7)
            if pcr_pid is None:
                pcr_pid = pid
            if pid == pcr_pid:
                if last_pcr is not None and base < last_pcr:
                    pcr_back += 1
                if last_pcr is not None and base - last_pcr > 63_000:
                    pcr_jumps += 1
                last_pcr = base
    return {"packets": packets, "cc_errors": cc_errors, "pcr_backwards": pcr_back,
            "pcr_jumps": pcr_jumps}


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _section_start(p: bytes) -> int:
    """Offset of the PSI section in a packet that starts one."""
    off = 4 + (1 + p[4] if p[3] & 0x20 else 0)
    return off + 1 + p[off]


class Layout:
    """Follows PAT and PMT through a capture: the PMT PID and the video PID in force."""

    def __init__(self) -> None:
        self.pmt_pid: int | None = None
        self.video_pid: int | None = None
        self.pat: bytes | None = None
        self.pmt: bytes | None = None

    def see(self, p: bytes) -> None:
        if not p[1] & 0x40:
            return
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == 0:
            s = _section_start(p)
            self.pat = p
            self.pmt_pid = ((p[s + 10] & 0x1F) << 8) | p[s + 11]
        elif pid == self.pmt_pid:
            s = _section_start(p)
            self.pmt = p
            end = s + 3 + (((p[s + 1] & 0x0F) << 8) | p[s + 2]) - 4
            i = s + 12 + (((p[s + 10] & 0x0F) << 8) | p[s + 11])
            while i + 5 <= end:
                if p[i] in (0x1B, 0x24):
                    self.video_pid = ((p[i + 1] & 0x1F) << 8) | p[i + 2]
                    return
                i += 5 + (((p[i + 3] & 0x0F) << 8) | p[i + 4])


def gop_chunks(data: bytes) -> list[bytes]:
    """Splits a capture at each video packet with random_access_indicator; each chunk is
    prefixed with the PAT and PMT in force, so it decodes on its own."""
    layout = Layout()
    starts: list[tuple[int, bytes]] = []
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        layout.see(p)
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == layout.video_pid and is_random_access(p) and layout.pat and layout.pmt:
            starts.append((off, layout.pat + layout.pmt))
    return [
        head + data[off:starts[i + 1][0]] for i, (off, head) in enumerate(starts[:-1])
    ]


def bad_gops(data: bytes, tmp: Path) -> tuple[int, list[str]]:
    """Decodes each whole GOP of a capture on its own; returns how many there are and what
    `ffmpeg -v error` said about those that did not decode cleanly."""
    chunks = gop_chunks(data)
    bad = []
    for i, chunk in enumerate(chunks):
        path = tmp / f"gop{i}.ts"
        path.write_bytes(chunk)
        errors = decode_errors(path)
        if errors:
            bad.append(f"GOP {i}: {errors[:200]}")
        path.unlink()
    return len(chunks), bad


def pes_backwards(data: bytes) -> dict[int, int]:
    """Per PID, how often a PES's DTS (else PTS) is not after the previous one's (33-bit
    wrap-aware). Empty when every stream's time only moves forward."""
    last: dict[int, int] = {}
    back: dict[int, int] = {}
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if not p[1] & 0x40 or not p[3] & 0x10:
            continue
        pid = ((p[1] & 0x1F) << 8) | p[2]
        o = 4 + (1 + p[4] if p[3] & 0x20 else 0)
        pes = p[o:]
        if len(pes) < 19 or pes[:3] != b"\0\0\1" or pes[3] in (0xBC, 0xBE, 0xBF, 0xF0, 0xF1):
            continue
        flags = pes[7] >> 6
        if flags not in (2, 3):
            continue
        at = 14 if flags == 3 else 9
        b = pes[at:at + 5]
        ts = (b[0] >> 1 & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
        if pid in last:
            step = (ts - last[pid]) % (1 << 33)
            if step == 0 or step >= 1 << 32:
                back[pid] = back.get(pid, 0) + 1
        last[pid] = ts
    return back


def live_sender(peers: Peers, clip: Path, url: str) -> subprocess.Popen[bytes]:
    """ffmpeg sending `clip` in a loop at real time to `url` (SRT caller or UDP), remuxed
    with continuous timestamps: a live encoder's output, at the cost of a copy."""
    return peers.start([
        "ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
        "-c", "copy", "-f", "mpegts", url,
    ])


def srt_receiver(peers: Peers, port: int, cap: UdpCapture) -> subprocess.Popen[bytes]:
    """srt-live-transmit calling an SRT listener output and forwarding to a UDP capture."""
    return peers.start([
        "srt-live-transmit", "-q", f"srt://127.0.0.1:{port}?mode=caller",
        f"udp://127.0.0.1:{cap.port}",
    ])


def video_payloads(data: bytes) -> set[bytes]:
    """The payloads of a clip's video packets that continue a PES (no header, so nothing a
    splice rewrites): what identifies the clip in a capture."""
    layout = Layout()
    out: set[bytes] = set()
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        layout.see(p)
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == layout.video_pid and not p[1] & 0x40 and p[3] & 0x10:
            out.add(p[4 + (1 + p[4] if p[3] & 0x20 else 0):])
    return out


def sources_of(chunks: list[bytes], clips: dict[str, set[bytes]]) -> list[str | None]:
    """For each captured datagram, which clip its video payload packets came from: a name of
    `clips`, `"?"` if a payload is in none of them (rewritten, corrupted or the slate), or
    None if the datagram has no video payload that tells."""
    layout = Layout()
    out: list[str | None] = []
    for chunk in chunks:
        found: str | None = None
        for off in range(0, len(chunk) - TS + 1, TS):
            p = chunk[off:off + TS]
            layout.see(p)
            pid = ((p[1] & 0x1F) << 8) | p[2]
            if pid != layout.video_pid or p[1] & 0x40 or not p[3] & 0x10:
                continue
            payload = p[4 + (1 + p[4] if p[3] & 0x20 else 0):]
            names = [n for n, s in clips.items() if payload in s]
            if len(names) == 1:
                found = names[0]
            elif not names:
                found = "?"
        out.append(found)
    return out


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, another CA, and server, client and stranger certificates (127.0.0.1, localhost)."""
    d = tmp_path_factory.mktemp("certs")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        ssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={ca}",
            "-keyout",
            f"{ca}.key",
            "-out",
            f"{ca}.pem",
        )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other-ca")):
        ssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            f"{name}.pem",
        )
    return d
