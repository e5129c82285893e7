"""Real peer processes (ffmpeg, srt-live-transmit, gst-launch-1.0, castway itself), each in its
own session with its own log, and all of them stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO

from support.capture import UdpCapture


class Peers:
    """Starts real peer processes and stops whatever is left with `stop_all`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self._n = 0

    def start(
        self, argv: list[str], stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout_path: Path | None = None, env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Starts ``argv`` in a session of its own, its stderr (and stdout unless
        ``stdout_path``) in a log; ``env`` adds to the environment."""
        self._n += 1
        log = open(self.tmp / f"peer{self._n}-{Path(argv[0]).name}.log", "wb")
        out: int | IO[bytes] = open(stdout_path, "wb") if stdout_path else log
        p = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=log, start_new_session=True,
                             env={**os.environ, **env} if env else None)
        self.procs.append(p)
        return p

    def log(self, p: subprocess.Popen[bytes]) -> str:
        i = self.procs.index(p) + 1
        return next(self.tmp.glob(f"peer{i}-*.log")).read_text(errors="replace")

    def stop_all(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 10) -> None:
        """Sends `sig` to the process group of every peer still running, the last started
        first; a peer not gone `timeout` seconds later is killed."""
        for p in reversed(self.procs):
            if p.poll() is None:
                _signal_group(p, sig)
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait(timeout=timeout)


def _signal_group(p: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def srt_receiver(peers: Peers, port: int, cap: UdpCapture) -> subprocess.Popen[bytes]:
    """srt-live-transmit calling an SRT listener output and forwarding to a UDP capture."""
    return peers.start([
        "srt-live-transmit", "-q", f"srt://127.0.0.1:{port}?mode=caller",
        f"udp://127.0.0.1:{cap.port}",
    ])
