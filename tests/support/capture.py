"""A UDP capture on a loopback port: the datagrams and their arrival times, on a thread."""

from __future__ import annotations

import itertools
import socket
import threading
import time

# Linux's SO_RCVBUFFORCE (Python's socket module does not name it).
SO_RCVBUFFORCE = 33


class UdpCapture:
    """Receives datagrams on a loopback port into memory, on a thread. With `keep=False` only
    the arrival times are kept (a long run that measures gaps)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 keep: bool = True) -> None:
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
        self.keep = keep
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
            if self.keep:
                self.chunks.append(data)
            self.times.append(time.monotonic())

    @property
    def data(self) -> bytes:
        return b"".join(list(self.chunks))

    @property
    def size(self) -> int:
        return sum(len(c) for c in list(self.chunks))

    def gap(self, start: float, end: float) -> float:
        """The longest time between two arrivals from `start` to `end` (monotonic clock); the
        whole window if fewer than two datagrams arrived in it."""
        ts = [t for t in list(self.times) if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(ts)), default=end - start)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
