"""The notebook API: a :class:`Gateway` holds routes; a :class:`Route` fans one input out.

A thin typed layer over the native module. Every call that starts or stops pipelines runs in
Rust with the GIL released; no Python runs per packet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Literal, TypedDict, cast

from castway import _castway


class SrtCallerStats(TypedDict):
    address: str
    rtt_ms: float
    loss: int
    retransmissions: int
    dropped: int
    latency_ms: int


class SrtStats(TypedDict):
    rtt_ms: float
    loss: int
    retransmissions: int
    dropped: int
    bandwidth_mbps: float
    latency_ms: int
    callers: list[SrtCallerStats]


class EndpointStats(TypedDict, total=False):
    id: str
    uri: str
    kind: Literal["srt", "udp", "file", "test"]
    state: Literal[
        "starting", "connecting", "listening", "waiting", "live", "retrying", "ended", "stopped"
    ]
    active: bool
    idle_ms: int | None
    bytes: int
    packets: int
    bitrate_bps: int
    drops: int
    reconnects: int
    retry_in_ms: int | None
    last_error: str | None
    srt: SrtStats | None


class RouteStats(TypedDict):
    name: str
    state: Literal["live", "waiting", "stopped"]
    uptime_s: float
    active_input: str | None
    inputs: list[EndpointStats]
    outputs: list[EndpointStats]


Outputs = Sequence[str] | Mapping[str, str]


def _output_pairs(outputs: Outputs) -> list[tuple[str, str | None]]:
    if isinstance(outputs, str):
        return [(outputs, None)]
    if isinstance(outputs, Mapping):
        return [(uri, out_id) for out_id, uri in outputs.items()]
    return [(uri, None) for uri in outputs]


class Route:
    """One stream: inputs (the first is active) → hub → outputs."""

    def __init__(self, native: _castway.Route) -> None:
        self._native = native

    @property
    def name(self) -> str:
        return self._native.name

    def add_output(self, uri: str, id: str | None = None) -> str:
        """Adds an output while the route runs (no gap on the others); returns its id."""
        return self._native.add_output(uri, id)

    def remove_output(self, id: str) -> None:
        """Removes an output while the route runs (no gap on the others)."""
        self._native.remove_output(id)

    def stats(self) -> RouteStats:
        """State, bytes, packets, bitrate and drops of the route, each input and each output."""
        return cast(RouteStats, self._native.stats())

    def __repr__(self) -> str:
        return f"<castway.Route {self.name!r}>"


class Gateway:
    """Holds routes. Use as a context manager; closing stops every route.

    >>> with castway.Gateway() as gw:
    ...     r = gw.add_route("demo", "test://?size=640x360", ["srt://:9710"])
    """

    def __init__(self) -> None:
        self._native = _castway.Gateway()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add_route(
        self,
        name: str,
        inputs: Sequence[str] | str,
        outputs: Outputs = (),
        *,
        queue_bytes: int | None = None,
    ) -> Route:
        """Builds and starts a route.

        ``inputs`` are URIs in priority order; ``outputs`` are URIs, or ``{id: uri}``.
        ``queue_bytes`` bounds how much each output may fall behind before its drops are
        counted (default 2 MiB).
        """
        ins = [inputs] if isinstance(inputs, str) else list(inputs)
        native = self._native.add_route(name, ins, _output_pairs(outputs), queue_bytes)
        return Route(native)

    def route(self, name: str) -> Route:
        return Route(self._native.route(name))

    def routes(self) -> list[str]:
        return self._native.route_names()

    def remove_route(self, name: str) -> None:
        self._native.remove_route(name)

    def stats(self) -> list[RouteStats]:
        return cast(list[RouteStats], self._native.stats())

    def close(self) -> None:
        self._native.close()
