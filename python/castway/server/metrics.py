"""The gateway's figures as OpenTelemetry metrics, exported for Prometheus.

Observable instruments read the native counters when a scrape collects them: one
``Gateway.stats()`` call per scrape, nothing per packet in Python. The stats shape is the one
``Route.stats()`` returns (docs/stats.md); the tables ``ENDPOINT``, ``SRT``, ``TS``, ``ROUTE``
and ``SWITCH`` below name which of its figures become which series, so a figure reaches
Prometheus by one line here. docs/metrics.md lists every series.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from castway import __version__
from castway.gateway import RouteStats

Kind = str  # "counter" (only goes up) or "gauge"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Series:
    """One instrument: its OpenTelemetry name, kind, unit and description, and how to read
    its value from one stats entry. Several series of one name with different constant
    ``labels`` are one instrument (one family in the Prometheus text): each reads its own value
    from the same rows, so the rows' labels are written once for all of them."""

    name: str
    kind: Kind
    unit: str
    description: str
    value: Callable[[Any], float | int | None]
    labels: tuple[tuple[str, str], ...] = ()


def _key(name: str) -> Callable[[Any], Any]:
    return lambda d: d.get(name)


def _libsrt(group: str, name: str) -> Callable[[Any], Any]:
    """A figure of an SRT link's ``libsrt`` group (srt-live-transmit's ``-s`` names)."""
    return lambda d: (d.get("libsrt") or {}).get(group, {}).get(name)


def _flag(name: str) -> Callable[[Any], int | None]:
    return lambda d: None if d.get(name) is None else int(bool(d[name]))


# Per input and output (attributes: route, endpoint, kind, direction).
ENDPOINT = (
    Series("castway.endpoint.io", "counter", "By", "bytes received (inputs) or delivered "
           "(outputs; an SRT output: taken by at least one of its connections)", _key("bytes")),
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
    Series("castway.output.burst", "counter", "{packet}", "packets sent from the GOP cache as "
           "the output joined (instant start; also in castway.endpoint.packets)",
           _key("burst_packets")),
    Series("castway.output.unheard", "counter", "{packet}", "packets the output had no peer "
           "for (an SRT listener without callers, a caller not connected): discarded, not in "
           "castway.endpoint.packets", _key("unheard_packets")),
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
    Series("castway.srt.packets", "counter", "{packet}", "data packets sent (outputs) or "
           "received (inputs) on the link", _key("packets")),
    Series("castway.srt.acks", "counter", "{packet}", "ACKs received (outputs) or sent "
           "(inputs)", _key("acks")),
    Series("castway.srt.naks", "counter", "{packet}", "NAKs (loss reports) received (outputs) "
           "or sent (inputs)", _key("naks")),
    Series("castway.srt.rate", "gauge", "bit/s", "send (outputs) or receive (inputs) rate as "
           "libsrt measures it", lambda d: None if d.get("rate_mbps") is None
           else d["rate_mbps"] * 1e6),
    Series("castway.srt.caller_drops", "counter", "{packet}", "TS packets a caller did not "
           "take (its send buffer was full): callers only", _key("drops")),
    *(Series("castway.srt.refused", "counter", "{caller}", "callers a listener had refused by "
             "libsrt for their passphrase, by reason (bad_secret: a wrong one; unsecure: one on "
             "a side only)", _key(f"refused_{reason}"), (("reason", reason),))
      for reason in ("bad_secret", "unsecure")),
    Series("castway.srt.refusal_events_missed", "counter", "{caller}", "refusals of a "
           "listener not reported as srt_refused events (more than 10 in one second)",
           _key("refusal_events_missed")),
    Series("castway.srt.send_buffer", "gauge", "ms", "what the send buffer holds, in time "
           "(not yet acknowledged)", _libsrt("send", "msBuf")),
    Series("castway.srt.receive_buffer", "gauge", "ms", "what the receive buffer holds, in "
           "time (not yet played out)", _libsrt("recv", "msBuf")),
    Series("castway.srt.flight_size", "gauge", "{packet}", "packets sent and not yet "
           "acknowledged", _libsrt("window", "flight")),
    Series("castway.srt.max_bandwidth", "gauge", "bit/s", "the sending rate's ceiling",
           lambda d: None if _libsrt("link", "maxBandwidth")(d) is None
           else _libsrt("link", "maxBandwidth")(d) * 1e6),
    Series("castway.srt.send_buffer_available", "gauge", "By", "free space in the send buffer",
           _libsrt("send", "byteAvailBuf")),
    Series("castway.srt.receive_buffer_available", "gauge", "By", "free space in the receive "
           "buffer", _libsrt("recv", "byteAvailBuf")),
)

# The priority of each TR 101 290 check (ETSI TR 101 290 5.2; unreferenced_pid is 3.4.a), in
# the order of `analysis.errors`.
TS_PRIORITY = {
    "ts_sync_loss": 1, "sync_byte_error": 1, "pat_error": 1, "continuity_count_error": 1,
    "pmt_error": 1, "pid_error": 1, "transport_error": 2, "crc_error": 2,
    "pcr_repetition_error": 2, "pcr_discontinuity_indicator_error": 2, "pts_error": 2,
    "unreferenced_pid": 3,
}


def _ts_errors(check: str) -> Callable[[Any], Any]:
    return lambda a: a["errors"].get(check)


def _ts_conditions(check: str) -> Callable[[Any], Any]:
    return lambda a: sum(1 for c in a["active"] if c["check"] == check) or None


# Per input and TR 101 290 check (attributes as per endpoint, plus check and priority), from
# each input's `analysis`: the errors of every check, zeros included (so `increase()` sees the
# first one); the conditions only of the checks in force (a clean input has none, which keeps a
# scrape of many routes small).
TS = tuple(
    Series("castway.input.ts_errors", "counter", "{error}", "TR 101 290 errors of the input as "
           "it arrives, by check (a lapse counts once, an error of one instant each time)",
           _ts_errors(check), (("check", check), ("priority", str(priority))))
    for check, priority in TS_PRIORITY.items()
) + tuple(
    Series("castway.input.ts_conditions", "gauge", "{condition}", "TR 101 290 conditions in "
           "force on the input, by check (one per PID for the checks of a PID); only while "
           "there are any", _ts_conditions(check), (("check", check), ("priority", str(priority))))
    for check, priority in TS_PRIORITY.items()
) + (
    Series("castway.input.ts_changes_missed", "counter", "{change}", "changes of TR 101 290 "
           "conditions that came too fast to reach the event log (they are still counted)",
           _key("changes_missed")),
)

def _recording_state(state: str) -> Callable[[Any], int]:
    return lambda r: int(r["recording"]["state"] == state)


# Per route (attribute: route).
ROUTE = (
    Series("castway.route.live", "gauge", "1", "1 while the input on air delivers",
           lambda r: int(r["state"] == "live")),
    Series("castway.route.slate", "gauge", "1", "1 while the slate is on air",
           lambda r: int(r["state"] == "slate")),
    Series("castway.route.uptime", "gauge", "s", "seconds since the route started",
           _key("uptime_s")),
    Series("castway.route.cuts", "counter", "{cut}", "runs spliced onto the outputs",
           lambda r: r["switch"]["cuts"]),
    Series("castway.route.slate_packets", "counter", "{packet}", "packets the slate put on air",
           lambda r: r["switch"]["slate_packets"]),
    Series("castway.route.psi_versions_bumped", "counter", "{table}", "PATs and PMTs given a "
           "new version number after a cut (their content differed from what went out last)",
           lambda r: r["switch"]["psi_versions_bumped"]),
    Series("castway.route.gop_cache", "gauge", "By", "bytes of the last GOP kept for instant "
           "start", lambda r: r["gop_cache"]["bytes"]),
    Series("castway.route.gops_too_large", "counter", "{gop}", "GOPs not kept for instant "
           "start because they outgrew gop_cache_bytes", lambda r: r["gop_cache"]["too_large"]),
    # The recorder (docs/recording.md): its figures from the route's `recording` stats.
    Series("castway.recording.active", "gauge", "1", "1 while the route records (not paused)",
           lambda r: int(r["recording"]["state"] == "recording")),
    *(Series("castway.recording.state", "gauge", "1", "1 for the recorder's state (recording, "
             "paused, failing, stopped), 0 for the others",
             _recording_state(state), (("state", state),))
      for state in ("recording", "paused", "failing", "stopped")),
    Series("castway.recording.segments", "counter", "{segment}", "segments closed since the "
           "recording started", lambda r: r["recording"]["segments"]),
    Series("castway.recording.written", "counter", "By", "bytes written to segments since the "
           "recording started", lambda r: r["recording"]["bytes"]),
    Series("castway.recording.segment_size", "gauge", "By", "bytes in the open segment",
           lambda r: r["recording"]["segment_bytes"]),
    Series("castway.recording.drops", "counter", "{packet}", "TS packets not recorded for want "
           "of room (queue full, disk refused)", lambda r: r["recording"]["drops"]),
    Series("castway.recording.errors", "counter", "{error}", "failed writes, opens and renames",
           lambda r: r["recording"]["errors"]),
    Series("castway.recording.stalls", "counter", "{stall}", "times the mp4 branch stalled "
           "(nothing muxed for 10 s while the stream arrived)",
           lambda r: r["recording"]["stalls"]),
    Series("castway.recording.no_space", "counter", "By", "bytes not recorded: the volume was "
           "below its free-space floor when a segment was due",
           lambda r: r["recording"]["no_space_bytes"]),
    Series("castway.recording.floor_ends", "counter", "{segment}", "segments ended early (at "
           "their next keyframe): the volume reached its free-space floor while they were "
           "written", lambda r: r["recording"]["floor_ends"]),
    Series("castway.recording.floor_retries", "counter", "{retry}", "segments due to open "
           "tried again in vain: the volume still below its free-space floor",
           lambda r: r["recording"]["floor_retries"]),
    Series("castway.recording.program_changes", "counter", "{file}", "mp4: files ended where "
           "the program changed inside one run of the hub",
           lambda r: r["recording"]["program_changes"]),
    Series("castway.recording.psi_inserted", "counter", "{packet}", "PAT and PMT packets "
           "copied in front of keyframes that had none right before them",
           lambda r: r["recording"]["psi_inserted"]),
    Series("castway.recording.audio_dropped", "counter", "{buffer}", "mp4: audio buffers "
           "dropped before the first video keyframe of a start or resume",
           lambda r: r["recording"]["audio_dropped"]),
    Series("castway.recording.pauses_mid_frame", "counter", "{pause}", "pauses that closed "
           "the segment without reaching a frame's start within 1 s",
           lambda r: r["recording"]["pauses_mid_frame"]),
)


# Per route and reason (attributes: route, reason).
SWITCH = (
    Series("castway.route.switches", "counter", "{switch}", "switches since the route started, "
           "by reason (lost, error, eos, manual, failback, recovered, input_added, "
           "input_removed, slate)", _key("count")),
)


def _switch_reasons(routes: list[RouteStats]) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    for r in routes:
        for reason, count in r["switch"]["by_reason"].items():
            yield {"count": count}, {"route": r["name"], "reason": reason}


# Per webhook (attribute: webhook): its deliveries since the server started.
WEBHOOK = (
    Series("castway.webhook.delivered", "counter", "{event}", "events the receiver accepted",
           _key("delivered")),
    Series("castway.webhook.failed", "counter", "{event}", "events given up (attempts "
           "exhausted, or refused)", _key("failed")),
    Series("castway.webhook.retries", "counter", "{attempt}", "attempts after the first",
           _key("retries")),
    Series("castway.webhook.dropped", "counter", "{event}", "events not queued: the queue was "
           "full", _key("dropped")),
    Series("castway.webhook.queued", "gauge", "{event}", "events waiting to be delivered",
           _key("queued")),
)

# Per event sink but the webhooks (attribute: sink): the log and the events file.
EVENT_SINK = (
    Series("castway.event_sink.dropped", "counter", "{event}", "events not queued: the "
           "sink's queue was full", _key("dropped")),
    Series("castway.event_sink.queued", "gauge", "{event}", "events waiting to be handled",
           _key("queued")),
    Series("castway.event_sink.missed", "counter", "{event}", "events the event log moved "
           "past before the sinks read them (every sink missed them, webhooks too)",
           _key("missed")),
)

# The shared SRT port (attribute: address): callers let in, by what they asked, and refused,
# by SRT reject reason.
SRT_PORT = tuple(
    Series("castway.srt_port.accepted", "counter", "{caller}", "callers the shared SRT port "
           "let in, by what they asked (publish, read)", _key(f"{kind}s_accepted"),
           (("mode", mode),))
    for kind, mode in (("publisher", "publish"), ("reader", "read"))
) + tuple(
    Series("castway.srt_port.refused", "counter", "{caller}", "callers the shared SRT port "
           "refused, by SRT reject reason", _key(f"refused_{reason}"), (("reason", reason),))
    for reason in ("bad_request", "unauthorized", "forbidden", "not_found", "conflict",
                   "bad_secret", "unsecure", "unavailable")
) + (
    Series("castway.srt_port.dropped", "counter", "{caller}", "publishers the shared SRT port "
           "let in that their route did not take once connected", _key("publishers_dropped")),
    Series("castway.srt_port.probes", "counter", "{caller}", "castway probe callers the shared "
           "SRT port served (stream ID probe)", _key("probes_accepted")),
    Series("castway.srt_port.probe_received", "counter", "By", "bytes castway probe callers sent "
           "the shared SRT port, discarded", _key("probe_bytes")),
    Series("castway.srt_port.probes_idle_closed", "counter", "{caller}", "castway probe callers "
           "the shared SRT port closed because they sent nothing for 2 s",
           _key("probes_idle_closed")),
    Series("castway.srt_port.probes_active", "gauge", "{caller}", "castway probe callers the "
           "shared SRT port serves now (2 at most)", _key("probes_active")),
    Series("castway.srt_port.refusal_events_missed", "counter", "{caller}", "refusals of the "
           "shared SRT port not reported as srt_refused events (more than 10 in one second)",
           _key("refusal_events_missed")),
)

# The recordings directory's figures that belong to no route (no attribute; only on a
# control server that records: `Recordings.metrics`).
RECORDINGS = (
    Series("castway.recordings.lost", "counter", "{segment}", "segments repaired after a crash "
           "that no route's path pattern (or more than one) matches: left out of the catalog, "
           "never deleted by retention", _key("lost")),
)

Statuses = Callable[[], list[tuple[str, dict[str, Any]]]]
PortStats = Callable[[], Any]  # Gateway.srt_port_stats: SrtPortStats or None
RecordingsStats = Callable[[], Any]  # Recordings.metrics: a dict, or None (not recording)


class Reading(NamedTuple):
    """What one collection reads: every route's stats, each webhook's and each other event
    sink's name and counters, the shared SRT port's figures (None: not open), and the
    recordings' (``Recordings.metrics``; None: no recordings manager)."""

    routes: list[RouteStats]
    webhooks: list[tuple[str, dict[str, Any]]]
    sinks: list[tuple[str, dict[str, Any]]]
    srt_port: Any = None
    recordings: Any = None


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


def _analyses(routes: list[RouteStats]) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    for e, attrs in _endpoints(routes):
        analysis = e.get("analysis")
        if analysis:
            yield dict(analysis), attrs


class Snapshot:
    """The gateway's stats, read at most once per `max_age` seconds (one scrape reads every
    instrument from the same snapshot)."""

    def __init__(self, read: Callable[[], list[RouteStats]], max_age: float = 0.5) -> None:
        self._read, self.max_age = read, max_age
        self._lock = threading.Lock()
        self._at = 0.0
        self._routes: list[RouteStats] = []

    def routes(self) -> list[RouteStats]:
        with self._lock:
            if time.monotonic() - self._at > self.max_age:
                self._routes = self._read()
                self._at = time.monotonic()
            return self._routes


def otlp_configured() -> bool:
    """Whether the environment asks for metrics over OTLP."""
    return any(os.environ.get(v) for v in (
        "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


_audit = logging.getLogger("castway.audit")


class _Quiet(WSGIRequestHandler):
    """No line on stderr per scrape; a scraper that stalls is dropped after 5 s."""

    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        pass


# OpenTelemetry units as the Prometheus exporter spells them in a series' name.
_UNIT_SUFFIX = {"By": "bytes", "ms": "milliseconds", "s": "seconds", "bit/s": "bit_per_second"}


def prometheus_name(s: Series) -> str:
    """The series' name as OpenTelemetry's Prometheus exporter writes it: dots become
    underscores, then the unit (annotations such as ``{packet}`` and ``1`` add nothing), then
    ``_total`` for a counter: ``castway.endpoint.io`` in ``By`` is
    ``castway_endpoint_io_bytes_total``."""
    name = s.name.replace(".", "_")
    unit = _UNIT_SUFFIX.get(s.unit, "")
    if unit and not name.endswith(unit):
        name += f"_{unit}"
    return name + ("_total" if s.kind == "counter" else "")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


Rows = Callable[[Reading], Iterable[tuple[Any, dict[str, str]]]]

# Per route recorded, from the recordings manager (attribute: route): figures that outlive a
# restart of the recorder (a policy change, a stop and start), and the open segment's start.
RECORDING_TOTALS = (
    Series("castway.recording.segments_all", "counter", "{segment}", "segments closed since "
           "the server started, across restarts of the recorder", _key("segments")),
    Series("castway.recording.written_all", "counter", "By", "bytes written to segments since "
           "the server started, across restarts of the recorder", _key("bytes")),
    Series("castway.recording.drops_all", "counter", "{packet}", "TS packets not recorded for "
           "want of room since the server started, across restarts of the recorder",
           _key("drops")),
    Series("castway.recording.errors_all", "counter", "{error}", "recording errors since the "
           "server started, across restarts of the recorder", _key("errors")),
    Series("castway.recording.segment_start", "gauge", "s", "Unix time the open segment "
           "started at (only while one is open)", _key("segment_start")),
)
# Retention (attribute: reason): segments deleted, and deletions that failed (no attribute).
RETENTION = (
    Series("castway.recording.retention_deleted", "counter", "{segment}", "segments retention "
           "deleted (or found gone), by reason: age, bytes, free_space, missing, outside",
           _key("count")),
)
RETENTION_FAILURES = (
    Series("castway.recording.retention_failures", "counter", "{deletion}", "deletions "
           "retention tried and could not make (the file stays; see recording_error)",
           _key("failures")),
)


def _recording_totals(r: Reading) -> Iterator[tuple[Any, dict[str, str]]]:
    """Each route's running totals: what it recorded across restarts of its recorder (its own
    ``*_all`` figures) plus what the earlier routes of its name did (the manager's)."""
    if r.recordings is None:
        return
    base = r.recordings["totals"]
    starts = r.recordings["segment_start"]
    for route in r.routes:
        rec: dict[str, Any] = dict(route["recording"])
        done = base.get(route["name"], {})
        row = {k: done.get(k, 0) + rec[f"{k}_all"]
               for k in ("segments", "bytes", "drops", "errors")}
        row["segment_start"] = starts.get(rec["segment"]) if rec["segment"] else None
        yield row, {"route": route["name"]}

GROUPS: tuple[tuple[tuple[Series, ...], Rows], ...] = (
    (ENDPOINT, lambda r: _endpoints(r.routes)),
    (SRT, lambda r: _srt_links(r.routes)),
    (TS, lambda r: _analyses(r.routes)),
    (ROUTE, lambda r: ((route, {"route": route["name"]}) for route in r.routes)),
    (SWITCH, lambda r: _switch_reasons(r.routes)),
    (WEBHOOK, lambda r: ((st, {"webhook": name}) for name, st in r.webhooks)),
    (EVENT_SINK, lambda r: ((st, {"sink": name}) for name, st in r.sinks)),
    (SRT_PORT, lambda r: [(r.srt_port, {"address": r.srt_port["address"]})] if r.srt_port else []),
    (RECORDING_TOTALS, _recording_totals),
    (RETENTION, lambda r: [] if r.recordings is None else [
        ({"count": n}, {"reason": reason}) for reason, n in sorted(r.recordings["deleted"].items())
    ]),
    (RETENTION_FAILURES, lambda r: [] if r.recordings is None else [(r.recordings, {})]),
    (RECORDINGS, lambda r: [(r.recordings, {})] if r.recordings is not None else []),
)


def _braces(labels: str) -> str:
    """``{labels}``; nothing for a series without labels (``labels`` may start with a
    comma: a series' own labels after none from its row)."""
    labels = labels.lstrip(",")
    return f"{{{labels}}}" if labels else ""


def add_instruments(meter: Meter, read: Callable[[], Reading], per_caller: bool = True) -> None:
    """Every series above as an observable instrument of ``meter``, reading ``read()`` when
    collected; without ``per_caller``, not the series of each SRT caller (``peer``)."""

    def callback(
        family: list[Series], rows: Rows
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            data = list(rows(read()))
            for s in family:
                for row, attrs in data:
                    if not per_caller and "peer" in attrs:
                        continue
                    value = s.value(row)
                    if value is not None:
                        yield Observation(value, {**attrs, **dict(s.labels)})

        return observe

    for table, rows in GROUPS:
        families: dict[str, list[Series]] = {}
        for s in table:
            families.setdefault(s.name, []).append(s)
        for family in families.values():
            s = family[0]
            make = (meter.create_observable_counter if s.kind == "counter"
                    else meter.create_observable_gauge)
            make(s.name, callbacks=[callback(family, rows)], unit=s.unit,
                 description=s.description)


class Metrics:
    """The instruments above over the gateway's stats, read when collected: as Prometheus text
    (``render``, served by ``serve``) and, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) is set, as OpenTelemetry observable instruments
    that an OTLP/HTTP exporter pushes every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default 60000),
    as the OpenTelemetry SDK reads them.

    The Prometheus text is written here rather than by the SDK's Prometheus reader: that reader
    builds several objects per data point, about 30 µs a series, and 500 routes have 15,000
    series (450 ms a scrape); written directly, with each row's labels escaped once, the same
    text takes about 2 µs a series. Names, units and types are the reader's (a test compares
    them); the ``otel_scope_*`` labels it adds to every line are left out."""

    def __init__(
        self, read: Callable[[], list[RouteStats]], webhooks: Statuses | None = None,
        sinks: Statuses | None = None,
        srt_port: PortStats | None = None,
        recordings: RecordingsStats | None = None,
    ) -> None:
        """``read``: every route's stats; ``webhooks``: each webhook's name and counters;
        ``sinks``: each other event sink's; ``srt_port``: the shared SRT port's figures
        (``Gateway.srt_port_stats``); ``recordings``: the recordings directory's
        (``Recordings.stats``)."""
        self.snapshot = Snapshot(read)
        self._webhooks: Statuses = webhooks or list
        self._sinks: Statuses = sinks or list
        self._srt_port: PortStats = srt_port or (lambda: None)
        self._recordings: RecordingsStats = recordings or (lambda: None)
        self._names = {s: prometheus_name(s) for table, _ in GROUPS for s in table}
        self._target = (
            f'target_info{{service_name="castway",service_version="{_escape(__version__)}"}} 1\n'
        )
        self.provider: MeterProvider | None = None
        if otlp_configured():
            self.provider = MeterProvider(
                metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
                # The SDK folds an instrument's series past 2000 into one overflow series; 500
                # routes with two inputs have 12,000 TR 101 290 error series. It also keeps
                # every attribute set it ever saw (cumulative temporality), so the callers'
                # series (`peer`, a new port at each reconnection) are left out of OTLP, and the
                # limit bounds what route churn can leave behind.
                views=[View(instrument_name="castway.*", aggregation_cardinality_limit=100_000)],
                resource=Resource.create(
                    {"service.name": "castway", "service.version": __version__}
                ),
            )
            add_instruments(
                self.provider.get_meter("castway", __version__), self.reading, per_caller=False
            )

    def reading(self) -> Reading:
        return Reading(
            self.snapshot.routes(), self._webhooks(), self._sinks(), self._srt_port(),
            self._recordings(),
        )

    def render(self) -> bytes:
        """Every series in Prometheus' text format (0.0.4), from one read of the stats."""
        reading = self.reading()
        out = ["# HELP target_info Target metadata\n# TYPE target_info gauge\n", self._target]
        for table, rows in GROUPS:
            labelled = [
                (row, ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(attrs.items())))
                for row, attrs in rows(reading)
            ]
            family = ""
            for s in table:
                name = self._names[s]
                extra = "".join(f',{k}="{_escape(v)}"' for k, v in s.labels)
                lines = [f"{name}{_braces(labels + extra)} {value}\n"
                         for row, labels in labelled if (value := s.value(row)) is not None]
                if not lines:
                    continue  # as the SDK's reader: no family without a sample
                if name != family:
                    # The series of one name follow each other: one family.
                    family = name
                    kind = "counter" if s.kind == "counter" else "gauge"
                    out.append(f"# HELP {name} {s.description}\n# TYPE {name} {kind}\n")
                out.extend(lines)
        return "".join(out).encode()

    def serve(
        self, host: str, port: int, authorize: Callable[[str], bool] | None = None
    ) -> tuple[Any, int]:
        """Serves ``/metrics`` on ``host:port`` (0 picks a port) on a thread; returns the HTTP
        server (``shutdown()`` stops it) and the port. With ``authorize``, a scrape must carry
        ``Authorization: Bearer KEY`` for a key it accepts, else it gets 401."""

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if authorize is not None:
                scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
                given = scheme.lower() == "bearer" and token.strip()
                if not given or not authorize(token.strip()):
                    # Refusals go to the audit log as gRPC's do (a key that is not given is
                    # not a guess, and is not logged).
                    if given:
                        _audit.warning("metrics key=- peer=%s status=UNAUTHENTICATED",
                                       environ.get("REMOTE_ADDR", "-"),
                                       extra={"call": "metrics", "status": "UNAUTHENTICATED",
                                              "peer": environ.get("REMOTE_ADDR", "-")})
                    start_response("401 Unauthorized", [
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("WWW-Authenticate", 'Bearer realm="castway metrics"'),
                    ])
                    why = ("unknown or revoked API key" if given
                           else "/metrics needs an API key: Authorization: Bearer KEY")
                    return [f"castway: {why}\n".encode()]
            if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"castway: metrics are at /metrics\n"]
            body = self.render()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                      ("Content-Length", str(len(body)))])
            return [body]

        # One scrape at a time: a thread per request would cost more than the scrape (0.55
        # against 0.32 ms of CPU for a small gateway), and scrapers wait their turn.
        class Server(WSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        http = make_server(host, port, app, Server, handler_class=_Quiet)
        threading.Thread(target=http.serve_forever, name="castway-metrics", daemon=True).start()
        return http, int(http.server_address[1])

    def close(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
