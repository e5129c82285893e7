"""Events on the server: the gateway's one numbered sequence (what the data plane reports and
what the control plane adds) fanned out to ``WatchEvents`` streams, webhooks and the events file.

One thread (``castway-events``) waits on the native event log without the GIL, a second at a
time, and hands each new event

- to every sink (a webhook, the JSON-lines file): each has a bounded queue and its own thread;
  the event is put without waiting, and a full queue drops it and counts it;
- to the gRPC event loop, as a wake-up: each ``WatchEvents`` stream reads the log itself from
  its own position, on the loop, without waiting (:meth:`EventHub.watch`).

So no sink, slow receiver or slow client can hold up the data plane, the other sinks or the
other streams; a stream that falls behind by more than the log keeps is told so.

What sinks receive is what a viewer sees: secrets in error texts redacted and SRT stream IDs
shown as ``***`` (:func:`public`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import secrets
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import Any

from castway import event_kinds
from castway.errors import EventsLostError
from castway.gateway import Event, EventKind, Gateway
from castway.redact import REDACTED, redact_text
from castway.server.errors import InvalidArgument
from castway.server.keys import current_key
from castway.server.logs import about
from castway.server.specs import check_name

log = logging.getLogger("castway.events")

KINDS: tuple[str, ...] = tuple(event_kinds())
# Events one read of the log returns at most.
BATCH = 500
# The longest a waiting thread or stream sleeps before it looks again (stop, close).
POLL_S = 1.0


def record_change(gateway: Gateway, kind: EventKind, **fields: str | None) -> None:
    """Adds a control-plane event to the gateway's sequence, with the id of the API key of the
    call being served (none for the config file and in-process calls). Never raises: an event
    must not undo the change it reports."""
    key = current_key()
    try:
        gateway.emit(kind, key_id=key.id if key else None, **fields)
    except Exception:
        log.exception("event %s not recorded", kind)


def check_kinds(kinds: Iterable[str], field: str = "kinds") -> frozenset[str]:
    """``kinds`` as a filter; an unknown one is INVALID_ARGUMENT naming it."""
    out = set()
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            raise InvalidArgument(
                f"{field}[{i}]", f"unknown event kind {kind!r} (known: {', '.join(KINDS)})"
            )
        out.add(kind)
    return frozenset(out)


def check_routes(routes: Iterable[str], field: str = "routes") -> frozenset[str]:
    """``routes`` (names) as a filter; a name no route could have is INVALID_ARGUMENT."""
    out = set()
    for i, name in enumerate(routes):
        check_name("route", name, f"{field}[{i}]")
        out.add(name)
    return frozenset(out)


def matches(event: Event, kinds: frozenset[str], routes: frozenset[str]) -> bool:
    """Whether ``event`` passes the filters (an empty one passes everything; a route filter
    passes no event without a route)."""
    if kinds and event["kind"] not in kinds:
        return False
    return not routes or event.get("route", "") in routes


def public(event: Event, secrets_shown: bool = False) -> Event:
    """``event`` as a viewer sees it (``secrets_shown``: as an operator does): SRT stream IDs
    as ``***`` and secrets in error texts redacted."""
    if secrets_shown or ("error" not in event and "stream_id" not in event):
        return event
    shown = Event(**event)
    if "error" in shown:
        shown["error"] = redact_text(shown["error"])
    if "stream_id" in shown:
        shown["stream_id"] = REDACTED
    return shown


def to_json(event: Event) -> str:
    """One event as one line of JSON (no newline): the shape of the events file, the webhooks'
    bodies and ``castway events --json``."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class QueuedSink:
    """A consumer of events with a bounded queue and its own thread: ``offer`` never waits (a
    full queue drops the event and counts it in ``dropped``); ``handle`` runs on the thread."""

    drain = False
    # Whether ``EventHub.statuses`` lists it (webhooks are listed by ``Webhooks.statuses``).
    metered = True

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.dropped = 0
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"castway-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wants(self, event: Event) -> bool:
        return True

    def offer(self, event: Event) -> None:
        if not self.wants(event):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def status(self) -> dict[str, Any]:
        """What the sink dropped (its queue was full) and holds now."""
        return {"dropped": self.dropped, "queued": self.queued}

    def handle(self, event: Event) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            try:
                self.handle(event)
            except Exception:
                log.exception("%s: event #%d not handled", self.name, event["seq"])

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the thread; what is still queued is handled now if ``drain`` says so (a
        local file), else dropped (a network receiver could hold the stop up)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        while self.drain and not self._thread.is_alive():
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self.handle(event)


class FileSink(QueuedSink):
    """Appends each event to ``path`` as one line of JSON, written (and so visible to a log
    shipper) as it comes. The file is created 0600."""

    drain = True

    def __init__(self, path: Path, size: int = 10_000) -> None:
        super().__init__("events-file", size)
        self.path = path
        self.written = 0
        self.errors = 0
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(path, flags, 0o600)

    def handle(self, event: Event) -> None:
        line = (to_json(event) + "\n").encode()
        try:
            # One write per line: with O_APPEND, lines from this and other writers never mix.
            os.write(self._fd, line)
            self.written += 1
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("cannot write to the events file %s: %s", self.path, e.strerror)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        # Closed only once its thread is done: a number closed under a running writer could be
        # reused by another file, which would then get its lines.
        if not self._thread.is_alive():
            os.close(self._fd)


# What the data plane reports, and which of it is bad news (logged as a warning).
DATA_PLANE = frozenset({
    "route_state", "input_lost", "input_recovered", "switch", "output_connected",
    "output_disconnected", "output_failing", "caller_joined", "caller_left", "analysis",
    "srt_refused",
})
_WARNINGS = frozenset({"input_lost", "output_failing", "srt_refused"})


class LogSink(QueuedSink):
    """Writes each data-plane event as a log line (logger ``castway.events``) naming its route,
    ``route news: switch from=main to=backup reason=lost``, with the route's name in the
    record for ``--log-format json``. The control plane's own events are in the audit log."""

    drain = True

    def __init__(self, size: int = 10_000) -> None:
        super().__init__("events-log", size)

    def wants(self, event: Event) -> bool:
        return event["kind"] in DATA_PLANE

    def handle(self, event: Event) -> None:
        route = str(event.get("route", ""))
        fields = " ".join(
            f"{k}={json.dumps(v) if isinstance(v, bool) else v}"
            for k, v in event.items() if k not in ("seq", "at", "kind", "route", "run")
        )
        bad = event["kind"] in _WARNINGS or (
            event["kind"] == "analysis" and bool(event.get("active"))
        )
        level = logging.WARNING if bad else logging.INFO
        if not route:
            # A caller the shared SRT port refused before it named a route.
            log.log(level, "%s %s", event["kind"], fields)
            return
        log.log(level, "route %s: %s %s", route, event["kind"], fields, extra=about(route))


class _Wakeup:
    """Wakes the coroutines of one event loop waiting for new events."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._event = asyncio.Event()

    def notify_threadsafe(self) -> None:
        self.loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass


class EventHub:
    """The server's side of the gateway's event log: sinks and ``WatchEvents`` streams."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self._lock = threading.Lock()
        self._sinks: list[QueuedSink] = []
        self._wakeups: list[_Wakeup] = []
        self._stop = threading.Event()
        self._closing = False
        # Events the dispatcher itself missed (it fell behind the log: never seen so far).
        self.missed = 0
        # The last event dispatched. From 0: what happened while the server started reaches
        # the sinks too.
        self._after = 0
        self._closed = False
        # This run of the server: event numbers start from 1 again at each start, so an event
        # is (run, seq). In every event the sinks and streams get, and in webhook deliveries.
        self.run = secrets.token_hex(4)
        self._thread = threading.Thread(target=self._run, name="castway-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add_sink(self, sink: QueuedSink) -> None:
        sink.start()
        with self._lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: QueuedSink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)
        sink.stop()

    def statuses(self) -> list[tuple[str, dict[str, Any]]]:
        """Each sink's counters but the webhooks' (they have their own, ``Webhooks.statuses``),
        with ``missed``: events the log moved past before the dispatcher read them, which
        every sink missed, webhooks too."""
        with self._lock:
            sinks = [s for s in self._sinks if s.metered]
        return [(s.name, {**s.status(), "missed": self.missed}) for s in sinks]

    def end_watches(self) -> None:
        """Ends every ``WatchEvents`` stream (at the server's stop: they would hold its grace
        period)."""
        self._closing = True
        self._notify()

    def stop(self) -> None:
        """Ends every ``WatchEvents`` stream and stops the dispatcher and the sinks, after
        handing the sinks what is left in the log (the routes' last events, when the gateway
        stopped first)."""
        self.end_watches()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        # Every sink is told to stop first, then each is waited for: a stuck receiver holds up
        # the stop once, not once per webhook.
        with self._lock:
            for sink in self._sinks:
                sink._stop.set()
        for _ in range(100):
            if not self._dispatch(0.0):
                break
        with self._lock:
            sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.stop()

    def _notify(self) -> None:
        with self._lock:
            wakeups = list(self._wakeups)
        for w in wakeups:
            try:
                w.notify_threadsafe()
            except RuntimeError:  # its loop is closed
                with self._lock:
                    if w in self._wakeups:
                        self._wakeups.remove(w)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._dispatch(POLL_S) and self._closed:
                self._stop.wait(POLL_S)

    def _dispatch(self, timeout: float) -> bool:
        """Hands the sinks and the streams what came after the last event dispatched, waiting
        up to ``timeout`` for something; returns whether anything came."""
        after = self._after
        batch = self._gw.event_batch(after, timeout, BATCH)
        self._closed = batch.closed
        # From 0 too: events that left the log before the first read were missed as well.
        if batch.events and batch.events[0]["seq"] > after + 1:
            gone = batch.events[0]["seq"] - 1 - after
            self.missed += gone
            log.warning("the event sinks missed %d events (the log moved past them)", gone)
        if not batch.events:
            return False
        self._after = batch.events[-1]["seq"]
        shown = [self._stamped(public(e)) for e in batch.events]
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            for e in shown:
                sink.offer(e)
        self._notify()
        return True

    def _stamped(self, event: Event) -> Event:
        """``event`` with this run's id (a copy)."""
        stamped = Event(**event)
        stamped["run"] = self.run
        return stamped

    def _wakeup(self) -> _Wakeup:
        loop = asyncio.get_running_loop()
        with self._lock:
            for w in self._wakeups:
                if w.loop is loop:
                    return w
            w = _Wakeup(loop)
            self._wakeups.append(w)
            return w

    async def watch(
        self,
        after: int,
        kinds: frozenset[str] = frozenset(),
        routes: frozenset[str] = frozenset(),
        follow: bool = False,
        secrets_shown: bool = False,
        run: str = "",
        still_allowed: Callable[[], bool] = lambda: True,
    ) -> AsyncGenerator[Event, None]:
        """The events numbered above ``after`` that pass the filters, oldest first; with
        ``follow`` also each new one, until the server stops. Runs on the event loop and never
        blocks it: it reads the log without waiting and sleeps on a wake-up from the
        dispatcher (or a second at most). Raises :class:`EventsLostError` when events it should
        yield are no longer kept, at the start or later (a client reading slower than events
        come, by more than the log keeps), and when ``run`` (where ``after`` was read) is not
        this run: the numbers started from 1 again. Ends, raising :class:`PermissionError`,
        once ``still_allowed()`` says no (the key was revoked), checked at each wake-up."""
        if run and run != self.run:
            batch = self._gw.event_batch(0, 0.0, 1)
            raise EventsLostError(
                f"event #{after} is of run {run}, and the server restarted since: this run is "
                f"{self.run}; its oldest kept event is #{batch.oldest} (watch run {self.run} "
                "from 0)",
                after=after, oldest=batch.oldest, latest=batch.latest,
            )
        wake = self._wakeup()
        end: int | None = None
        while not self._closing:
            batch = self._gw.event_batch(after, 0.0, BATCH)
            if batch.lost(after):
                raise EventsLostError.reading(after, batch.oldest, batch.latest)
            if end is None and not follow:
                end = batch.latest
            for e in batch.events:
                if end is not None and e["seq"] > end:
                    return
                after = e["seq"]
                if matches(e, kinds, routes):
                    yield self._stamped(public(e, secrets_shown))
            if end is not None and after >= end:
                return
            if batch.events:
                await asyncio.sleep(0)  # let the loop serve others between batches
                continue
            if batch.closed:
                return
            await wake.wait(POLL_S)
            if not still_allowed():
                raise PermissionError("the key this stream was opened with was revoked")

