"""Test support shared by the tests and the benchmarks: TS analysis, real peers, senders,
captures, clips, ports and network namespaces, and a UDP impairment proxy.

    ts        TS analysis: continuity by ISO rules, PCR, PES timestamps, GOPs, layout, payloads
    clips     clips made and decoded with ffmpeg
    peers     real peer processes (ffmpeg, srt-live-transmit, gst-launch-1.0), killed at the end
    senders   paced UDP senders (once, or looped like a live encoder), pipe senders, live encoders
    capture   a UDP capture on loopback
    net       free ports, network namespaces
    impair    a userspace UDP relay with seeded loss, delay, jitter and reordering (no netem here),
              in this process or as one
    control   a control server for tests, in this process or as one
    tracing   a control server whose trace spans are kept in memory
    udp_tool  a UDP sender and capture as a process, for namespaces and benches

pytest puts `tests/` on `sys.path` (`pythonpath` in pyproject.toml); a bench imports
`benches/support_path.py` first, which does the same. Only the standard library is imported
here, so a bench or a tool pays nothing for what it does not use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar


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


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


@contextmanager
def closing_all(make: Callable[..., C]) -> Iterator[Callable[..., C]]:
    """A factory like ``make`` whose every product is closed when the block ends (what a
    fixture yields when a test may want several captures or receivers)."""
    made: list[C] = []

    def factory(*args: Any, **kwargs: Any) -> C:
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing

    try:
        yield factory
    finally:
        for thing in made:
            thing.close()
