"""The notebook API: a :class:`Gateway` holds routes; a :class:`Route` fans its active input out.

A thin typed layer over the native module. Every call that starts or stops pipelines runs in
Rust with the GIL released; no Python runs per packet.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Required, TypedDict, cast

from castway import _castway, notebook
from castway._closing import Closing
from castway.errors import CastwayError, ConfigError, EventsLostError


class SrtWindowStats(TypedDict):
    """An SRT connection's ``window`` (srt-live-transmit's ``-s`` names)."""

    flow: int
    congestion: int
    flight: int


class SrtLinkMeasures(TypedDict):
    """An SRT connection's ``link``."""

    rtt: float
    bandwidth: float
    maxBandwidth: float


class SrtSendStats(TypedDict):
    """An SRT connection's ``send`` side."""

    packets: int
    packetsUnique: int
    packetsLost: int
    packetsDropped: int
    packetsRetransmitted: int
    packetsFilterExtra: int
    bytes: int
    bytesUnique: int
    bytesDropped: int
    byteAvailBuf: int
    msBuf: int
    mbitRate: float
    sendPeriod: float


class SrtRecvStats(TypedDict):
    """An SRT connection's ``recv`` side."""

    packets: int
    packetsUnique: int
    packetsLost: int
    packetsDropped: int
    packetsRetransmitted: int
    packetsBelated: int
    packetsFilterExtra: int
    packetsFilterSupply: int
    packetsFilterLoss: int
    bytes: int
    bytesUnique: int
    bytesLost: int
    bytesDropped: int
    byteAvailBuf: int
    msBuf: int
    mbitRate: float
    msTsbPdDelay: int


class SrtSocketStats(TypedDict):
    """libsrt's figures of one connection, as srt-live-transmit's ``-s`` JSON names them."""

    window: SrtWindowStats
    link: SrtLinkMeasures
    send: SrtSendStats
    recv: SrtRecvStats


class SrtCallerStats(TypedDict):
    address: str
    drops: int
    rtt_ms: float
    loss: int
    retransmissions: int
    dropped: int
    latency_ms: int
    packets: int
    acks: int
    naks: int
    rate_mbps: float
    libsrt: SrtSocketStats


class SrtPortStats(TypedDict):
    """The shared SRT port (:meth:`Gateway.listen_srt`): callers let in and refused."""

    address: str
    publishers_accepted: int
    readers_accepted: int
    refused_bad_request: int
    refused_unauthorized: int
    refused_forbidden: int
    refused_not_found: int
    refused_conflict: int
    # Let in by the stream ID, then refused by libsrt for a wrong passphrase.
    refused_bad_secret: int
    # Let in by the stream ID, then refused by libsrt: a passphrase on one side only.
    refused_unsecure: int
    # Let in, then not taken by their route once connected (stopping, or a publisher live).
    publishers_dropped: int
    # castway probe callers served, the bytes they sent (discarded), and those refused.
    probes_accepted: int
    probe_bytes: int
    refused_unavailable: int
    # Refusals not reported as ``srt_refused`` events (more than 10 in one second).
    refusal_events_missed: int
    # Probe callers closed because they sent nothing for 2 s (their slot freed).
    probes_idle_closed: int
    # Probe callers served now, each holding one of the port's 2 slots.
    probes_active: int


class SrtStats(TypedDict):
    rtt_ms: float
    loss: int
    retransmissions: int
    dropped: int
    bandwidth_mbps: float
    latency_ms: int
    packets: int
    acks: int
    naks: int
    rate_mbps: float
    libsrt: SrtSocketStats
    callers: list[SrtCallerStats]
    # Plain listeners: callers libsrt refused for their passphrase (wrong; on one side only),
    # and the refusals not reported as ``srt_refused`` events (more than 10 in one second).
    refused_bad_secret: int
    refused_unsecure: int
    refusal_events_missed: int


TsCheck = Literal[
    "ts_sync_loss", "sync_byte_error", "pat_error", "continuity_count_error", "pmt_error",
    "pid_error", "transport_error", "crc_error", "pcr_repetition_error",
    "pcr_discontinuity_indicator_error", "pts_error", "unreferenced_pid",
]


class TsErrors(TypedDict):
    """How often each TR 101 290 check failed (docs/stats.md, ``analysis``)."""

    ts_sync_loss: int
    sync_byte_error: int
    pat_error: int
    continuity_count_error: int
    pmt_error: int
    pid_error: int
    transport_error: int
    crc_error: int
    pcr_repetition_error: int
    pcr_discontinuity_indicator_error: int
    pts_error: int
    unreferenced_pid: int


class TsCondition(TypedDict):
    """A TR 101 290 condition in force; ``pid`` None for the whole stream."""

    check: TsCheck
    priority: int
    pid: int | None
    since: float


class TsConditionChange(TypedDict):
    seq: int
    at: float
    check: TsCheck
    priority: int
    pid: int | None
    change: Literal["started", "cleared"]


class TsStream(TypedDict):
    pid: int
    stream_type: int
    kind: Literal["video", "audio", "data"]
    codec: str | None
    language: str | None


class TsProgram(TypedDict):
    number: int
    pmt_pid: int
    pcr_pid: int | None
    streams: list[TsStream]


class TsPid(TypedDict):
    pid: int
    kind: Literal["pat", "cat", "pmt", "si", "video", "audio", "data", "pcr", "ecm", "emm",
                  "null", "unreferenced"]
    stream_type: int | None
    codec: str | None
    program: int | None
    packets: int
    bitrate_bps: int
    cc_errors: int


class VideoStream(TypedDict):
    pid: int
    codec: str
    width: int | None
    height: int | None
    frame_rate: float | None
    profile: str | None
    level: str | None
    interlaced: bool | None


class AudioStream(TypedDict):
    pid: int
    codec: str | None
    language: str | None


class TsAnalysis(TypedDict):
    """An input's TR 101 290 state and what its stream carries, as it arrives."""

    sync: bool
    errors: TsErrors
    active: list[TsCondition]
    programs: list[TsProgram]
    pids: list[TsPid]
    video: list[VideoStream]
    audio: list[AudioStream]
    history: list[TsConditionChange]
    changes_missed: int


class EndpointStats(TypedDict, total=False):
    id: str
    uri: str
    kind: Literal["srt", "udp", "file", "test"]
    state: Literal[
        "starting",
        "connecting",
        "listening",
        "waiting",
        "live",
        "retrying",
        "ended",
        "stopped",
        "standby",
    ]
    active: bool
    healthy: bool
    standby: Literal["warm", "cold"]
    idle_ms: int | None
    off_air_packets: int
    held_back_packets: int
    analysis: TsAnalysis
    bytes: int
    packets: int
    bitrate_bps: int
    drops: int
    reconnects: int
    retry_in_ms: int | None
    last_error: str | None
    srt: SrtStats | None
    burst_packets: int
    unheard_packets: int


SwitchReason = Literal[
    "lost", "error", "eos", "manual", "failback", "recovered", "input_added", "input_removed",
    "slate",
]


# One switch: ``from``/``to`` are input ids, ``"slate"``, or None (nothing); ``at`` is Unix time.
SwitchEvent = TypedDict(
    "SwitchEvent",
    {"seq": int, "at": float, "from": str | None, "to": str | None, "reason": SwitchReason},
)


class SwitchStats(TypedDict):
    active: str | None
    pending: str | None
    locked: str | None
    loss_timeout_ms: int
    failback_after_ms: int
    slate: bool
    cuts: int
    held_back_packets: int
    psi_versions_bumped: int
    psi_multi_packet: int
    slate_packets: int
    history: list[SwitchEvent]
    by_reason: dict[str, int]


class GopCacheStats(TypedDict):
    """Instant start: the last GOP the route keeps for outputs that join (docs/stats.md)."""

    limit_bytes: int
    bytes: int
    gops: int
    too_large: int
    bursts: int


RouteState = Literal["live", "slate", "waiting", "stopped"]


class RecordingStats(TypedDict):
    """The route's recorder (docs/recording.md)."""

    state: Literal["recording", "paused", "failing", "stopped"]
    segment: str | None
    segment_bytes: int
    segments: int
    bytes: int
    drops: int
    skipped: int
    cuts_off_keyframe: int
    cuts_without_psi: int
    psi_inserted: int
    queued_bytes: int
    errors: int
    stalls: int
    no_space_bytes: int
    floor_ends: int
    floor_retries: int
    program_changes: int
    segments_all: int
    bytes_all: int
    drops_all: int
    errors_all: int
    pauses_mid_frame: int
    audio_dropped: int
    last_error: str | None


class RouteStats(TypedDict):
    name: str
    state: RouteState
    uptime_s: float
    active_input: str | None
    inputs: list[EndpointStats]
    outputs: list[EndpointStats]
    switch: SwitchStats
    gop_cache: GopCacheStats
    recording: RecordingStats


Endpoints = str | Sequence[str] | Mapping[str, str]
# A picture size: ``(width, height)`` or ``"WIDTHxHEIGHT"``.
SlateSize = tuple[int, int] | str


def _pairs(endpoints: Endpoints) -> list[tuple[str, str | None]]:
    if isinstance(endpoints, str):
        return [(endpoints, None)]
    if isinstance(endpoints, Mapping):
        return [(uri, ep_id) for ep_id, uri in endpoints.items()]
    return [(uri, None) for uri in endpoints]


EventKind = Literal[
    "route_state",
    "input_lost",
    "input_recovered",
    "switch",
    "output_connected",
    "output_disconnected",
    "output_failing",
    "caller_joined",
    "caller_left",
    "analysis",
    "route_created",
    "route_updated",
    "route_deleted",
    "template_created",
    "template_updated",
    "template_deleted",
    "key_created",
    "key_revoked",
    "segment_opened",
    "segment_closed",
    "recording_error",
    "recording_deleted",
    "srt_refused",
]

# One event of the gateway's sequence (docs/events.md): ``seq`` (from 1), ``at`` (Unix time) and
# ``kind`` always; the other fields only when the kind sets them.
Event = TypedDict(
    "Event",
    {
        "seq": Required[int],
        "at": Required[float],
        "kind": Required[EventKind],
        "route": str,
        "input": str,
        "output": str,
        "from": str,
        "to": str,
        "reason": str,
        "error": str,
        "address": str,
        "stream_id": str,
        "user": str,
        "condition": str,
        "active": bool,
        "name": str,
        "key_id": str,
        # Segment events: the segment's record as JSON (docs/recording.md).
        "segment": str,
        # Set by a castway server: the run of the server that numbered the event.
        "run": str,
    },
    total=False,
)


class EventBatch(NamedTuple):
    """What one read of the event log returns (:meth:`Gateway.event_batch`)."""

    events: list[Event]
    # The number of the oldest event still kept (``latest + 1`` when none is): a reader that
    # asked for events above ``after`` missed ``oldest - 1 - after`` when that is above 0.
    oldest: int
    # The number of the latest event (0: none yet).
    latest: int
    # The gateway is closed: no wait lasts.
    closed: bool

    def lost(self, after: int) -> bool:
        """Whether events numbered above ``after`` are gone (``after=0``: never), or ``after``
        is beyond the latest event."""
        return after > self.latest or (after > 0 and self.oldest > after + 1)


class _Reading:
    """Where :meth:`Gateway.events` and :meth:`Gateway.aevents` are in the log, and how long
    they may still wait: ``timeout`` seconds with no event ends them, as does the log's end."""

    def __init__(self, after: int, timeout: float | None) -> None:
        self.after, self._timeout = after, timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._done = False

    def wait_s(self) -> float | None:
        """How long the next read may wait (at most a second); None when reading is over."""
        if self._done:
            return None
        if self._deadline is None:
            return 1.0
        return max(min(1.0, self._deadline - time.monotonic()), 0.0)

    def take(self, batch: EventBatch) -> list[Event]:
        """The events of ``batch``; raises :class:`EventsLostError` when some are gone."""
        if batch.lost(self.after):
            raise EventsLostError.reading(self.after, batch.oldest, batch.latest)
        if batch.events:
            self.after = batch.events[-1]["seq"]
            if self._timeout is not None:
                self._deadline = time.monotonic() + self._timeout
        elif batch.closed or (self._deadline is not None
                              and time.monotonic() >= self._deadline):
            self._done = True
        return batch.events


def is_shared_uri(uri: str) -> bool:
    """Whether ``uri`` is an ``srt-shared://`` endpoint: a place on a gateway's shared SRT port
    (:meth:`Gateway.listen_srt`), which nothing reaches while no port is open."""
    return uri.partition(":")[0].strip().lower() == "srt-shared"


def event_kinds() -> list[EventKind]:
    """Every event kind, as the data plane names them."""
    return cast(list[EventKind], _castway.event_kinds())


class Applied(TypedDict):
    """What :meth:`Gateway.update_route` changed."""

    inputs_added: list[str]
    inputs_removed: list[str]
    outputs_added: list[str]
    outputs_removed: list[str]
    reordered: bool
    settings: bool
    restarted: bool


def _spec(
    name: str,
    inputs: Endpoints,
    outputs: Endpoints,
    queue_bytes: int | None,
    loss_timeout_ms: int | None,
    failback_after_ms: int | None,
    slate: bool | None,
    slate_size: SlateSize | None,
    gop_cache_bytes: int | None = None,
) -> dict[str, object]:
    return {
        "gop_cache_bytes": gop_cache_bytes,
        "name": name,
        "inputs": _pairs(inputs),
        "outputs": _pairs(outputs),
        "queue_bytes": queue_bytes,
        "loss_timeout_ms": loss_timeout_ms,
        "failback_after_ms": failback_after_ms,
        "slate": slate,
        "slate_size": slate_size,
    }


def check_route(
    name: str,
    inputs: Endpoints,
    outputs: Endpoints = (),
    *,
    queue_bytes: int | None = None,
    loss_timeout_ms: int | None = None,
    failback_after_ms: int | None = None,
    slate: bool | None = None,
    slate_size: SlateSize | None = None,
    gop_cache_bytes: int | None = None,
) -> None:
    """Checks a route spec (the arguments of :meth:`Gateway.add_route`) without starting
    anything; raises what ``add_route`` would raise for it, short of a taken address."""
    _castway.check_spec(
        _spec(name, inputs, outputs, queue_bytes, loss_timeout_ms, failback_after_ms, slate,
              slate_size, gop_cache_bytes)
    )


class Route:
    """One stream: inputs in priority order → switch → hub → outputs."""

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

    def add_input(self, uri: str, id: str | None = None) -> str:
        """Adds an input at the lowest priority while the route runs; returns its id."""
        return self._native.add_input(uri, id)

    def remove_input(self, id: str) -> None:
        """Removes an input; if it was on air the switch picks another at once."""
        self._native.remove_input(id)

    def switch_to(self, id: str) -> None:
        """Switches to input ``id`` (at its next keyframe) and holds it there until :meth:`auto`."""
        self._native.switch_to(id)

    def auto(self) -> None:
        """Returns to automatic choice: the highest-priority healthy input."""
        self._native.auto()

    def wait_switch(self, after: int = 0, timeout: float | None = None) -> SwitchEvent | None:
        """Blocks (releasing the GIL) until a switch numbered above ``after`` happens.

        Returns the oldest such switch still in the history, or None on timeout or when the
        route stops. ``timeout=None`` waits until then.
        """
        while True:
            step = 3600.0 if timeout is None else timeout
            event = self._native.wait_switch(after, step)
            if event is not None or timeout is not None:
                return cast(SwitchEvent | None, event)
            if self.stats()["state"] == "stopped":
                return None

    def switches(self, timeout: float | None = None) -> Iterator[SwitchEvent]:
        """Yields each switch from now on; stops after ``timeout`` seconds without one."""
        history = self.stats()["switch"]["history"]
        after = history[-1]["seq"] if history else 0
        while True:
            event = self.wait_switch(after, timeout)
            if event is None:
                return
            after = event["seq"]
            yield event

    def stats(self) -> RouteStats:
        """State, bytes, packets, bitrate and drops of the route, each input and each output,
        and the switch: what is on air, what is locked, the last 20 switches."""
        return cast(RouteStats, self._native.stats())

    def wait_for(self, state: RouteState = "live", timeout: float = 10.0) -> None:
        """Blocks (releasing the GIL) until the route's state is ``state`` (``live``,
        ``slate``, ``waiting`` or ``stopped``, as :meth:`stats` shows it). Raises
        :class:`~castway.errors.TimedOutError` after ``timeout`` seconds, naming the state it
        is in, and :class:`~castway.errors.ClosedError` if the route stops meanwhile."""
        self._native.wait_state(state, timeout)

    def snapshot(
        self,
        input: str | None = None,
        *,
        format: Literal["jpeg", "png"] = "jpeg",
        size: tuple[int, int] | None = None,
        timeout: float = 5.0,
    ) -> notebook.Image:
        """The current picture of the route's output (or of input ``input``, on air or
        not), decoded by a branch off the hub that never slows the route (from the latest
        keyframe the hub keeps, or else from the next one), as a JPEG or PNG image Jupyter
        displays. ``size=(w, h)`` scales it (a thumbnail). Raises
        :class:`~castway.errors.TimedOutError` when no picture is decoded within ``timeout``
        seconds (no video arriving)."""
        _check_size(size)
        data, width, height, fmt, pts, at = self._native.snapshot(input, format, size, timeout)
        return notebook.Image(bytes(data), cast(Literal["png", "jpeg"], fmt), width, height,
                              pts, at)

    def frames(
        self,
        fps: float | None = None,
        size: tuple[int, int] | None = None,
        format: notebook.FrameFormat = "rgb",
        *,
        input: str | None = None,
        timeout: float = 10.0,
    ) -> notebook.Frames:
        """Decoded video frames of the route's output (or of input ``input``) as numpy
        arrays with their PTS and wall-clock time, at most ``fps`` a second, scaled to
        ``size=(w, h)``; ``format`` ``rgb``, ``bgr`` or ``gray``. A decode branch off the hub
        starts now and stops when the iterator is closed (``with``, ``close()``, or the end of
        a ``for`` loop over it); a slow consumer gets the newest frame, and the route never
        waits for it. Needs numpy (``pip install castway[notebook]``).

        >>> with route.frames(fps=5, size=(640, 360)) as frames:
        ...     for frame in frames:
        ...         detect(frame.image)
        """
        _check_size(size)
        native = self._native.decoder(input, format, size, fps)
        try:
            what = f"route `{self.name}`" if input is None else \
                f"input `{input}` of route `{self.name}`"
            return notebook.Frames(native, timeout, what)
        except ImportError:
            native.close()
            raise

    def history(self, seconds: float = 600.0) -> list[notebook.Sample]:
        """The route's figures of the last ``seconds``, one sample a second (the last 600
        are kept), oldest first: state, what was on air, the switch count, and each endpoint's
        bytes, bitrate, drops and SRT round trip and loss (None while no SRT peer is
        connected). Sampled by the route's control thread, nothing per packet. ``seconds``
        must be a finite number above 0 (else :class:`~castway.errors.ConfigError`)."""
        return cast(list[notebook.Sample], self._native.history(seconds))

    def history_frame(self, seconds: float = 600.0) -> Any:
        """:meth:`history` as a pandas DataFrame, one row per endpoint per second."""
        return notebook.history_frame(self.history(seconds), self.name)

    def stats_frame(self) -> Any:
        """:meth:`stats` as a pandas DataFrame, one row per endpoint, nested figures as
        dotted columns (``srt.rtt_ms``, ``analysis.errors.pat_error``)."""
        return notebook.stats_frame([self.stats()])

    def plot(self, seconds: float = 600.0, ax: Any = None) -> Any:
        """Draws the route's bitrate, SRT round trip and SRT loss over the last ``seconds``
        with matplotlib, each switch marked; returns the Figure."""
        stats = self.stats()
        return notebook.plot_history(self.history(seconds), stats["switch"]["history"],
                                     f"route {self.name}", ax)

    def _repr_html_(self) -> str:
        try:
            return notebook.route_html(self.stats())
        except CastwayError as e:
            return f"<div>route {self.name!r}: {e}</div>"

    @property
    def recording(self) -> Recording:
        """The route's recorder: start, pause, resume, stop (docs/recording.md)."""
        return Recording(self._native)

    def __repr__(self) -> str:
        try:
            s = self.stats()
        except CastwayError:
            return f"<castway.Route {self.name!r}>"
        return (f"<castway.Route {self.name!r} {s['state']}, on air "
                f"{s['switch']['active'] or 'nothing'}, {len(s['inputs'])} in, "
                f"{len(s['outputs'])} out>")


class Recording:
    """A route's recorder: segments of the route's output bytes, each starting with PAT/PMT
    and a keyframe, written as ``NAME.ts.part`` and renamed when closed (docs/recording.md)."""

    def __init__(self, native: _castway.Route) -> None:
        self._native = native

    def start(
        self,
        dir: str | os.PathLike[str],
        *,
        path: str | None = None,
        segment_ms: int | None = None,
        format: str | None = None,
        queue_bytes: int | None = None,
        min_free_bytes: int | None = None,
    ) -> None:
        """Starts recording under ``dir`` (made absolute): segments cut at the first keyframe
        at or after ``segment_ms`` (default 6000), named by ``path`` (strftime fields in UTC and
        ``{route}``; default ``{route}/%Y-%m-%d/%H-%M-%S``) plus ``.ts``. No segment opens
        while the volume has less than ``min_free_bytes`` free (counted in
        ``no_space_bytes``)."""
        self._native.start_recording(
            os.path.abspath(dir), path, segment_ms, format, queue_bytes, min_free_bytes
        )

    def set_min_free(self, min_free_bytes: int) -> None:
        """Sets the running recording's free-space floor (0: none)."""
        self._native.set_recording_floor(min_free_bytes)

    def pause(self) -> None:
        """Closes the open segment; nothing is written until :meth:`resume`."""
        self._native.pause_recording(True)

    def resume(self) -> None:
        """Goes on in a new segment from the next PAT and keyframe."""
        self._native.pause_recording(False)

    def stop(self) -> None:
        """Writes what is queued and closes the open segment (waits at most 5 s)."""
        self._native.stop_recording()

    def stats(self) -> RecordingStats:
        return cast(RouteStats, self._native.stats())["recording"]


class Gateway(Closing):
    """Holds routes. Use as a context manager; closing stops every route.

    >>> with castway.Gateway() as gw:
    ...     r = gw.add_route("demo", "test://?size=640x360", ["srt://:9710"])
    """

    def __init__(self, *, event_history: int = 10_000) -> None:
        """``event_history``: how many events :meth:`events` can go back (the oldest are
        dropped beyond it)."""
        self._native = _castway.Gateway(event_history)

    def add_route(
        self,
        name: str,
        inputs: Endpoints,
        outputs: Endpoints = (),
        *,
        queue_bytes: int | None = None,
        loss_timeout_ms: int | None = None,
        failback_after_ms: int | None = None,
        slate: bool | None = None,
        slate_size: SlateSize | None = None,
        gop_cache_bytes: int | None = None,
    ) -> Route:
        """Builds and starts a route.

        ``inputs`` are URIs in priority order (or ``{id: uri}``, in order); add
        ``standby=cold`` to an input URI to connect it only when needed. ``outputs`` are URIs,
        or ``{id: uri}``. Ids and the route's name are 1 to 64 of ``A-Z a-z 0-9 . _ -``,
        starting with a letter or digit. ``queue_bytes`` bounds how much each SRT or file
        output may fall behind before its drops are counted (default 2 MiB, 64 KiB to 1 GiB; a
        UDP output has no queue: its socket's send buffer, ``buffer_size=`` in its URI, plays
        that part). An input is lost after ``loss_timeout_ms`` without data (default 300, 50
        to 60000); a better input takes over again after ``failback_after_ms`` of unbroken
        health (default 5000, at most 3600000). When every input is lost a generated slate
        goes out unless ``slate=False``; ``slate_size=(w, h)`` (or ``"WxH"``) sets its picture
        (default: that of the input on air, read from its H.264 SPS; else 1280x720).
        ``gop_cache_bytes`` bounds the last GOP the route keeps for instant start: an output
        that starts on a running route gets it first and decodes from its first packets
        (default 1 MiB, at most 64 MiB; 0 turns it off). A bad setting raises ``ConfigError``
        naming it (``castway.errors.field_of``).
        """
        native = self._native.add_route(
            _spec(name, inputs, outputs, queue_bytes, loss_timeout_ms, failback_after_ms, slate,
                  slate_size, gop_cache_bytes)
        )
        return Route(native)

    def update_route(
        self,
        name: str,
        inputs: Endpoints,
        outputs: Endpoints = (),
        *,
        queue_bytes: int | None = None,
        loss_timeout_ms: int | None = None,
        failback_after_ms: int | None = None,
        slate: bool | None = None,
        slate_size: SlateSize | None = None,
        gop_cache_bytes: int | None = None,
    ) -> Applied:
        """Makes running route ``name`` match a new spec (the arguments of :meth:`add_route`)
        by difference. Inputs and outputs are matched by id (unnamed ones get the id they
        would get at creation: ``in0…``, ``out0…``); only those added, removed or changed
        start or stop, so receivers on the others see no gap. Inputs take the new priority
        order; loss and failback times and ``gop_cache_bytes`` apply at once. A change of
        ``queue_bytes``, ``slate`` or ``slate_size`` restarts the whole route. Returns what
        changed.
        """
        applied = self._native.update_route(
            _spec(name, inputs, outputs, queue_bytes, loss_timeout_ms, failback_after_ms, slate,
                  slate_size, gop_cache_bytes)
        )
        return cast(Applied, applied)

    def route(self, name: str) -> Route:
        return Route(self._native.route(name))

    def routes(self) -> list[str]:
        return self._native.route_names()

    def remove_route(self, name: str) -> None:
        self._native.remove_route(name)

    def stats(self) -> list[RouteStats]:
        return cast(list[RouteStats], self._native.stats())

    def stats_frame(self) -> Any:
        """Every route's :meth:`stats` as one pandas DataFrame, one row per endpoint."""
        return notebook.stats_frame(self.stats())

    def _repr_html_(self) -> str:
        return notebook.StatsView(self.stats())._repr_html_()

    def __repr__(self) -> str:
        try:
            return f"<castway.Gateway\n{notebook.StatsView(self.stats())!r}>"
        except CastwayError as e:
            return f"<castway.Gateway ({e})>"

    def listen_srt(self, address: str) -> str:
        """Opens the shared SRT port on ``address`` (``[HOST]:PORT``; port 0 picks one; srt://
        socket options may follow as a query, ``:8890?latency=200``) and returns the
        ``HOST:PORT`` it listens on. Publishers and readers of every route's ``srt-shared://``
        endpoints connect to it, chosen by stream ID (``#!::r=ROUTE,m=publish``,
        ``publish:ROUTE[:USER:PASS]``, ``read:ROUTE[:USER:PASS]`` or ``ROUTE``); see
        docs/uri.md. One per gateway. A bad address raises ``ConfigError``; a port another
        socket holds, ``AddressInUseError``."""
        return self._native.listen_srt(address)

    def set_srt_keys(self, keys: list[tuple[str, str]]) -> None:
        """The API keys ``srt-shared://?keys=1`` endpoints take as users, as ``(SHA-256 hex of
        the secret, role)``: any key may read, ``operator`` and ``admin`` keys may publish (a
        caller gives the secret as the password of ``publish:ROUTE:NAME:SECRET``). Replaces the
        last set; ``castway serve`` keeps it in step with its keys."""
        self._native.set_srt_keys(keys)

    def srt_port_stats(self) -> SrtPortStats | None:
        """The shared SRT port's address and callers let in and refused (by SRT reject
        reason); None if it is not open."""
        return cast("SrtPortStats | None", self._native.srt_port_stats())

    def event_batch(self, after: int = 0, timeout: float = 0.0, limit: int = 1000) -> EventBatch:
        """The events numbered above ``after`` (at most ``limit``), waiting up to ``timeout``
        seconds without holding the GIL while there is none, and where the log stands; for
        readers that handle a gap themselves (:meth:`EventBatch.lost`)."""
        events, oldest, latest, closed = self._native.wait_events(after, timeout, limit)
        return EventBatch(cast(list[Event], events), oldest, latest, closed)

    def wait_events(self, after: int = 0, timeout: float = 0.0, limit: int = 1000) -> list[Event]:
        """The events numbered above ``after`` (at most ``limit``), waiting up to ``timeout``
        seconds, without holding the GIL, while there is none; an empty list after the timeout.

        ``after=0`` reads from the oldest event kept. Raises :class:`EventsLostError` when
        events numbered above ``after`` are no longer kept (more than ``event_history`` came
        since), or when ``after`` is beyond the latest event.
        """
        batch = self.event_batch(after, timeout, limit)
        if batch.lost(after):
            raise EventsLostError.reading(after, batch.oldest, batch.latest)
        return batch.events

    def events(self, after: int = 0, timeout: float | None = None) -> Iterator[Event]:
        """Yields each event numbered above ``after`` (``0``: from the oldest kept), blocking
        for the next without holding the GIL; stops after ``timeout`` seconds without one
        (``None``: when the gateway closes). Raises :class:`EventsLostError` if events it
        should yield are no longer kept (it fell behind by more than ``event_history``).

        >>> for e in gw.events(after=gw.latest_event(), timeout=60):
        ...     print(e["seq"], e["kind"], e.get("route"))
        """
        reading = _Reading(after, timeout)
        # At most a second at a time in Rust, so Ctrl-C reaches Python.
        while (wait := reading.wait_s()) is not None:
            yield from reading.take(self.event_batch(reading.after, wait))

    async def aevents(self, after: int = 0, timeout: float | None = None) -> AsyncIterator[Event]:
        """:meth:`events` for asyncio: ``async for ev in gw.aevents(after=…)``. Each wait runs
        in a worker thread without the GIL for at most a second, so the event loop never
        blocks and a cancelled task ends within a second."""
        reading = _Reading(after, timeout)
        while (wait := reading.wait_s()) is not None:
            batch = await asyncio.to_thread(self.event_batch, reading.after, wait)
            for event in reading.take(batch):
                yield event

    def emit(self, kind: EventKind, **fields: str | None) -> int:
        """Adds an event of the control plane (``route_created`` … ``key_revoked``) with text
        ``fields`` (``route``, ``name``, ``key_id``, …) to the sequence; returns its number.
        The data plane reports the other kinds itself."""
        return self._native.emit(kind, dict(fields))

    def latest_event(self) -> int:
        """The number of the latest event (0: none yet); ``events(after=gw.latest_event())``
        yields only what happens from now on."""
        return self.event_batch(0, 0.0, 1).latest

    def close(self) -> None:
        self._native.close()


def _check_size(size: tuple[int, int] | None) -> None:
    """A picture size the extension can take (its own checks name the limits): two positive
    whole numbers, so that a negative one is a ConfigError naming it, not an OverflowError."""
    if size is None:
        return
    w, h = size
    if not (isinstance(w, int) and isinstance(h, int) and 0 < w < 1 << 32 and 0 < h < 1 << 32):
        raise ConfigError(f"size {w}x{h}: width and height must be positive whole numbers")
