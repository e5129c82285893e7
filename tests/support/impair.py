"""A UDP impairment proxy: a userspace relay on loopback that loses, delays, jitters and
reorders datagrams, decided from a seed so that a run can be repeated (this kernel has no
netem, so `tc qdisc … netem` is not an option).

    with ImpairProxy(target_port, Impairment(loss=0.05, delay_ms=40, seed=7)) as proxy:
        send to ("127.0.0.1", proxy.port) ...

Datagrams to `proxy.port` go on to the target from the proxy's own socket; what the target
sends back to that socket goes back to the last sender (so SRT's handshake and
retransmissions work through it), impaired the same way by a second generator. The fate of
the n-th datagram of a direction depends only on the seed and n (`Impairment.plan`), never on
timing. The proxy is bounded: it stops after `seconds`, or once it has taken `max_packets`
datagrams and sent on what it held of them; it holds at most `max_held` at a time (more are
dropped and counted as `overflow`). `done` is set when it has stopped.

`ImpairProcess` is the same relay in a process of its own, with the same `port`, `counts`
and `close()`: a thread of the test's interpreter shares the GIL with the test's other
threads (senders, captures), and on a loaded machine a stall of those delays everything the
relay holds, as a link never would; a stall longer than an SRT latency loses data that SRT
would have recovered.

    python -m support.impair TARGET_PORT IMPAIRMENT_JSON SECONDS

prints the relay's port, then the counts as JSON for each line read on stdin, and ends at the
end of stdin.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from support.capture import SO_RCVBUFFORCE


@dataclass(frozen=True)
class Fate:
    """What happens to one datagram: dropped, or sent `delay_s` after it arrived."""

    dropped: bool
    delay_s: float
    reordered: bool


@dataclass(frozen=True)
class Impairment:
    """`loss`: the share of datagrams dropped. `delay_ms`: added to each, plus a uniform
    `jitter_ms` either way (never below zero; jitter alone can reorder). `reorder`: the share
    held back `reorder_ms` more, so that the datagrams sent meanwhile overtake them."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 20.0
    seed: int = 1

    def fates(self, stream: int = 0) -> Fates:
        """The fates of one direction's datagrams, in order (0: to the target, 1: back)."""
        return Fates(self, random.Random(f"{self.seed}/{stream}"))

    def plan(self, n: int, stream: int = 0) -> list[Fate]:
        """The fates of the first `n` datagrams of a direction."""
        fates = self.fates(stream)
        return [fates.next() for _ in range(n)]


@dataclass
class Fates:
    impairment: Impairment
    rng: random.Random

    def next(self) -> Fate:
        imp = self.impairment
        # Three draws per datagram whatever they decide: the n-th fate depends on n only.
        lost, jitter, late = self.rng.random(), self.rng.uniform(-1, 1), self.rng.random()
        reordered = late < imp.reorder
        delay_ms = max(0.0, imp.delay_ms + jitter * imp.jitter_ms)
        delay_ms += imp.reorder_ms if reordered else 0.0
        return Fate(dropped=lost < imp.loss, delay_s=delay_ms / 1000, reordered=reordered)


@dataclass
class Counts:
    received: int = 0
    dropped: int = 0
    overflow: int = 0
    sent: int = 0
    reordered: int = 0


class ImpairProxy:
    """The relay: `port` takes datagrams for the target at `target_port` on `host`."""

    def __init__(self, target_port: int, impairment: Impairment, *,
                 host: str = "127.0.0.1", seconds: float = 60.0,
                 max_packets: int = 1_000_000, max_held: int = 10_000) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the impairment proxy relays on loopback only, not to {host}")
        self.impairment = impairment
        self.target = (host, target_port)
        self.seconds, self.max_packets, self.max_held = seconds, max_packets, max_held
        self.counts = Counts()
        self.inside = self._socket((host, 0))
        self.outside = self._socket((host, 0))
        self.port = int(self.inside.getsockname()[1])
        self._client: tuple[str, int] | None = None
        self._fates = [impairment.fates(0), impairment.fates(1)]
        # (due, order, direction, data): sent in order of due time, then of arrival.
        self._held: list[tuple[float, int, int, bytes]] = []
        self._order = 0
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _socket(addr: tuple[str, int]) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 * 1024 * 1024)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind(addr)
        s.setblocking(False)
        return s

    def _run(self) -> None:
        end = time.monotonic() + self.seconds
        sel = selectors.DefaultSelector()
        sel.register(self.inside, selectors.EVENT_READ, 0)
        sel.register(self.outside, selectors.EVENT_READ, 1)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                taking = self.counts.received < self.max_packets
                if now >= end or not (taking or self._held):
                    break
                wait = min(end - now, 0.05)
                if self._held:
                    wait = max(0.0, min(wait, self._held[0][0] - now))
                if taking:
                    for key, _ in sel.select(wait):
                        self._receive(key.fileobj, key.data)
                else:
                    time.sleep(wait)
                self._send_due(time.monotonic())
        finally:
            sel.close()
            self.done.set()

    def _receive(self, sock: socket.socket, direction: int) -> None:
        while self.counts.received < self.max_packets:
            try:
                data, addr = sock.recvfrom(65536)
            except BlockingIOError:
                return
            now = time.monotonic()
            if direction == 0:
                self._client = addr
            self.counts.received += 1
            fate = self._fates[direction].next()
            if fate.dropped:
                self.counts.dropped += 1
            elif len(self._held) >= self.max_held:
                self.counts.overflow += 1
            else:
                self.counts.reordered += fate.reordered
                self._order += 1
                heapq.heappush(self._held, (now + fate.delay_s, self._order, direction, data))

    def _send_due(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            _, _, direction, data = heapq.heappop(self._held)
            if direction == 0:
                self.outside.sendto(data, self.target)
            elif self._client is not None:
                self.inside.sendto(data, self._client)
            self.counts.sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.inside.close()
        self.outside.close()

    def __enter__(self) -> ImpairProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


TESTS = Path(__file__).resolve().parents[1]


class ImpairProcess:
    """`ImpairProxy` run by `python -m support.impair` in a process of its own."""

    def __init__(self, target_port: int, impairment: Impairment, *,
                 seconds: float = 60.0) -> None:
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "support.impair", str(target_port),
             json.dumps(dataclasses.asdict(impairment)), str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.port = int(self._answer())

    def _answer(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the impairment proxy exited ({self._proc.wait(5)})")
        return line

    @property
    def counts(self) -> Counts:
        """The counts now (asked of the process)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write("counts\n")
        self._proc.stdin.flush()
        return Counts(**json.loads(self._answer()))

    def close(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> ImpairProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def main(argv: list[str]) -> None:
    target, impairment, seconds = int(argv[0]), Impairment(**json.loads(argv[1])), float(argv[2])
    with ImpairProxy(target, impairment, seconds=seconds) as proxy:
        print(proxy.port, flush=True)
        for _ in sys.stdin:
            print(json.dumps(dataclasses.asdict(proxy.counts)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
