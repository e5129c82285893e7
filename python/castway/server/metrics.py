"""The gateway's figures as OpenTelemetry metrics, exported for Prometheus.

Observable instruments read the native counters when a scrape collects them: one
``Gateway.stats()`` call per scrape, nothing per packet in Python. The stats shape is the one
``Route.stats()`` returns (docs/stats.md); the tables ``ENDPOINT``, ``SRT``, ``TS_ERRORS``,
``TS_CONDITIONS`` and ``ROUTE`` below name which of its figures become which series, so a
figure reaches Prometheus by one line here.
docs/metrics.md lists every series.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from castway import __version__
from castway.gateway import RouteStats

Kind = str  # "counter" (only goes up) or "gauge"


@dataclass(frozen=True)
class Series:
    """One instrument: its OpenTelemetry name, kind, unit and description, and how to read
    its value from one stats entry."""

    name: str
    kind: Kind
    unit: str
    description: str
    value: Callable[[Any], float | int | None]


def _key(name: str) -> Callable[[Any], Any]:
    return lambda d: d.get(name)


def _flag(name: str) -> Callable[[Any], int | None]:
    return lambda d: None if d.get(name) is None else int(bool(d[name]))


# Per input and output (attributes: route, endpoint, kind, direction).
ENDPOINT = (
    Series("castway.endpoint.io", "counter", "By", "bytes received (inputs) or handed to the "
           "output (outputs)", _key("bytes")),
    Series("castway.endpoint.packets", "counter", "{packet}", "188-byte TS packets",
           _key("packets")),
    Series("castway.endpoint.drops", "counter", "{packet}", "packets lost here: not MPEG-TS "
           "(inputs), queue or send buffer full (outputs)", _key("drops")),
    Series("castway.endpoint.bitrate", "gauge", "bit/s", "bits per second over the last second",
           _key("bitrate_bps")),
    Series("castway.endpoint.reconnects", "counter", "{restart}", "restarts after an error, a "
           "lost peer or a stall", _key("reconnects")),
    Series("castway.endpoint.live", "gauge", "1", "1 while the endpoint is live",
           lambda d: int(d.get("state") == "live")),
    Series("castway.input.active", "gauge", "1", "1 while the input is on air",
           _flag("active")),
    Series("castway.input.healthy", "gauge", "1", "1 while the switch counts the input as "
           "delivering", _flag("healthy")),
    Series("castway.input.off_air", "counter", "{packet}", "packets that arrived while another "
           "source was on air", _key("off_air_packets")),
    Series("castway.input.held_back", "counter", "{packet}", "packets held back at a cut",
           _key("held_back_packets")),
)

# Per SRT endpoint, and per caller of a listener (attributes as above, plus peer).
SRT = (
    Series("castway.srt.rtt", "gauge", "ms", "round-trip time", _key("rtt_ms")),
    Series("castway.srt.loss", "counter", "{packet}", "packets lost on the link before "
           "retransmission", _key("loss")),
    Series("castway.srt.retransmissions", "counter", "{packet}", "packets retransmitted",
           _key("retransmissions")),
    Series("castway.srt.dropped", "counter", "{packet}", "packets given up as too late",
           _key("dropped")),
    Series("castway.srt.bandwidth", "gauge", "bit/s", "estimated link bandwidth",
           lambda d: None if d.get("bandwidth_mbps") is None else d["bandwidth_mbps"] * 1e6),
    Series("castway.srt.latency", "gauge", "ms", "negotiated latency", _key("latency_ms")),
)

# Per input and TR 101 290 check (attributes as per endpoint, plus check and priority), from
# each input's `analysis`: the errors of every check, zeros included (so `increase()` sees the
# first one); the conditions only of the checks in force (a clean input has none, which keeps a
# scrape of many routes small).
TS_ERRORS = (
    Series("castway.input.ts_errors", "counter", "{error}", "TR 101 290 errors of the input as "
           "it arrives, by check (a lapse counts once, an error of one instant each time)",
           _key("errors")),
)
TS_CONDITIONS = (
    Series("castway.input.ts_conditions", "gauge", "{condition}", "TR 101 290 conditions in "
           "force on the input, by check (one per PID for the checks of a PID); only while "
           "there are any", _key("conditions")),
)

# The priority of each TR 101 290 check (ETSI TR 101 290 5.2; unreferenced_pid is 3.4.a).
TS_PRIORITY = {
    "ts_sync_loss": 1, "sync_byte_error": 1, "pat_error": 1, "continuity_count_error": 1,
    "pmt_error": 1, "pid_error": 1, "transport_error": 2, "crc_error": 2,
    "pcr_repetition_error": 2, "pcr_discontinuity_indicator_error": 2, "pts_error": 2,
    "unreferenced_pid": 3,
}

# Per route (attribute: route).
ROUTE = (
    Series("castway.route.live", "gauge", "1", "1 while the input on air delivers",
           lambda r: int(r["state"] == "live")),
    Series("castway.route.slate", "gauge", "1", "1 while the slate is on air",
           lambda r: int(r["state"] == "slate")),
    Series("castway.route.uptime", "gauge", "s", "seconds since the route started",
           _key("uptime_s")),
    Series("castway.route.switches", "counter", "{switch}", "switches since the route started",
           lambda r: r["switch"]["history"][-1]["seq"] if r["switch"]["history"] else 0),
    Series("castway.route.cuts", "counter", "{cut}", "runs spliced onto the outputs",
           lambda r: r["switch"]["cuts"]),
    Series("castway.route.slate_packets", "counter", "{packet}", "packets the slate put on air",
           lambda r: r["switch"]["slate_packets"]),
)


def _endpoints(routes: list[RouteStats]) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    for r in routes:
        for direction, group in (("in", r["inputs"]), ("out", r["outputs"])):
            for e in group:
                yield dict(e), {"route": r["name"], "endpoint": e["id"], "kind": e["kind"],
                                "direction": direction}


def _srt_links(routes: list[RouteStats]) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    for e, attrs in _endpoints(routes):
        srt = e.get("srt")
        if not srt:
            continue
        yield dict(srt), attrs
        for c in srt.get("callers", []):
            yield dict(c), {**attrs, "peer": c["address"]}


def _ts_checks(
    routes: list[RouteStats], in_force: bool
) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """Per input and check: its error count; with `in_force`, only the checks in force, with
    how many conditions."""
    for e, attrs in _endpoints(routes):
        analysis = e.get("analysis")
        if not analysis:
            continue
        active: dict[str, int] = {}
        for c in analysis["active"]:
            active[c["check"]] = active.get(c["check"], 0) + 1
        checks = active if in_force else analysis["errors"]
        for check in checks:
            yield ({"errors": analysis["errors"].get(check), "conditions": active.get(check)},
                   {**attrs, "check": check, "priority": str(TS_PRIORITY.get(check, 0))})


class Snapshot:
    """The gateway's stats, read at most once per `max_age` seconds (one scrape reads every
    instrument from the same snapshot)."""

    def __init__(self, read: Callable[[], list[RouteStats]], max_age: float = 0.5) -> None:
        self._read, self._max_age = read, max_age
        self._lock = threading.Lock()
        self._at = 0.0
        self._routes: list[RouteStats] = []

    def routes(self) -> list[RouteStats]:
        with self._lock:
            if time.monotonic() - self._at > self._max_age:
                self._routes = self._read()
                self._at = time.monotonic()
            return self._routes


def otlp_configured() -> bool:
    """Whether the environment asks for metrics over OTLP."""
    return any(os.environ.get(v) for v in (
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


# Guards prometheus_client's global registry, which every reader passes through.
_GLOBAL = threading.Lock()


class Metrics:
    """OpenTelemetry instruments over the gateway's stats, with a Prometheus reader on its own
    registry (several servers may live in one process) and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
    (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set, an OTLP/HTTP exporter pushing every
    `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60000), as the OpenTelemetry SDK reads them."""

    def __init__(self, read: Callable[[], list[RouteStats]]) -> None:
        self.snapshot = Snapshot(read)
        self.reader = PrometheusMetricReader()
        # The reader registers itself with prometheus_client's global registry; this one's
        # series are served from their own registry instead.
        collector = self.reader._collector
        with _GLOBAL:
            REGISTRY.unregister(collector)
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        readers: list[MetricReader] = [self.reader]
        if otlp_configured():
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        self.provider = MeterProvider(
            metric_readers=readers,
            # The SDK folds the series of an instrument past 2000 into one overflow series; the
            # attributes of castway's series are bounded by the routes configured, and a
            # gateway of 500 routes with two inputs has 12000 TR 101 290 error series.
            views=[View(instrument_name="castway.*", aggregation_cardinality_limit=1_000_000)],
            resource=Resource.create({"service.name": "castway", "service.version": __version__}),
        )
        meter = self.provider.get_meter("castway", __version__)
        groups: list[tuple[tuple[Series, ...], Callable[[], Iterable[tuple[Any, dict[str, str]]]]]]
        groups = [
            (ENDPOINT, lambda: _endpoints(self.snapshot.routes())),
            (SRT, lambda: _srt_links(self.snapshot.routes())),
            (TS_ERRORS, lambda: _ts_checks(self.snapshot.routes(), False)),
            (TS_CONDITIONS, lambda: _ts_checks(self.snapshot.routes(), True)),
            (ROUTE, lambda: ((r, {"route": r["name"]}) for r in self.snapshot.routes())),
        ]
        for table, rows in groups:
            for s in table:
                make = (meter.create_observable_counter if s.kind == "counter"
                        else meter.create_observable_gauge)
                make(s.name, callbacks=[self._callback(s, rows)], unit=s.unit,
                     description=s.description)

    @staticmethod
    def _callback(
        s: Series, rows: Callable[[], Iterable[tuple[Any, dict[str, str]]]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for row, attrs in rows():
                value = s.value(row)
                if value is not None:
                    yield Observation(value, attrs)

        return observe

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Serves ``/metrics`` on ``host:port`` (0 picks a port) on a thread; returns the HTTP
        server (``shutdown()`` stops it) and the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_address[1])

    def close(self) -> None:
        # The reader's shutdown takes its collector out of the global registry: put it there.
        collector = self.reader._collector
        with _GLOBAL:
            self.registry.unregister(collector)
            REGISTRY.register(collector)
            self.provider.shutdown()
