"""What ties recording policy to the running routes: a thread that, once a second, starts and
stops each route's recorder as its policy, its schedule and the operator's start/stop say,
pauses it on the slate when the policy leaves slate time out, and runs retention.

The operator's ``start``/``stop`` override the policy (and its schedule) until the other is
called or the server restarts; ``pause``/``resume`` act on the running recorder. The clock
is injectable (``clock``), and ``tick(now)`` does one round, so tests drive schedules without
waiting for the wall clock.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from castway.errors import CastwayError
from castway.gateway import RecordingStats, Route, RouteStats
from castway.server.control import Control
from castway.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from castway.server.recording.catalog import Catalog, Segment
from castway.server.recording.repair import reconcile, repair
from castway.server.recording.retention import Pass, Retention
from castway.server.recording.schedule import Window, active, parse_windows, zone
from castway.server.specs import Recording

log = logging.getLogger("castway.recording")

TICK_S = 1.0
RETENTION_EVERY_S = 10.0
# Where clips are made, under the recordings directory; emptied when the server starts (what
# an interrupted clip left). A recording path pattern should not start with it.
CLIPS = ".castway-clips"
# How long a segment's file stays unchanged, its row open and no route writing it, before a
# retention pass closes its row from the file (its `segment_closed` is late or lost).
SETTLE_S = 60.0
# Open segments the metrics read the start of, at most.
MAX_OPEN_LISTED = 10_000


class Recordings:
    """The recordings of a control server, under ``root``."""

    def __init__(
        self,
        control: Control,
        catalog: Catalog,
        root: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control, self.catalog, self.root, self.clock = control, catalog, root, clock
        self.root.mkdir(parents=True, exist_ok=True)
        # What clips a crash interrupted left behind.
        shutil.rmtree(self.root / CLIPS, ignore_errors=True)
        self.retention = Retention(
            root, catalog, self._report_deleted, report_error=self._report_undeletable
        )
        # The operator's override per route: True (start), False (stop).
        self._manual: dict[str, bool] = {}
        # Routes paused because the slate is on air (policy `slate: false`).
        self._slate_paused: set[str] = set()
        self._schedules: dict[str, tuple[str, str, list[Window]]] = {}
        # Each route's recording errors at the last round: a new one (a full disk) brings the
        # next retention pass forward, so that the free-space floor is restored at once.
        self._errors: dict[str, int] = {}
        # What each recorder this manager started runs with: (path, segment_ms, format).
        self._started: dict[str, tuple[str | None, int | None, str | None]] = {}
        # The free-space floor each running recorder was last given.
        self._floors: dict[str, int] = {}
        # The routes recording at this round (worked out once a round, when first needed).
        self._recording_now: frozenset[str] | None = None
        self._lock = threading.RLock()
        # Clips being made now (at most `limits.max_clips`).
        self._clips = 0
        self._clips_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="castway-recordings", daemon=True)
        self._last_retention = 0.0
        # Each route's retention limits as kept in the store (read at the first pass).
        self._kept: dict[str, tuple[int | None, int | None]] | None = None
        self.last_pass = Pass()
        # Segments repaired after a crash that no route could be told for: not cataloged.
        self.lost = 0
        # Rows left open whose file was whole on disk, closed from it (`_reconcile`).
        self.reconciled = 0
        # What the earlier routes of each name did (segments, bytes, drops, errors), so that the
        # metrics' totals outlive a route stopped and started again (removed from the gateway
        # and added back). A route itself adds up its recorders across restarts (its `*_all`
        # figures), whoever makes them. Noticed at a tick: what a route did after the last
        # tick before it stopped is not in them.
        self._totals: dict[str, dict[str, int]] = {}
        # Each route's uptime and `*_all` figures at the last tick (a smaller uptime: a new
        # route of that name).
        self._seen: dict[str, tuple[float, dict[str, int]]] = {}
        # Segments retention deleted (or found gone), by reason, since the server started.
        self.deleted: dict[str, int] = {}

    # Lifecycle

    def repair(self) -> list[Segment]:
        """Repairs and catalogs the segments a crash left open (at start, before routes; never
        one a running route writes)."""
        patterns = {
            name: p.path for name, p in self.control.recording_policies().items() if p.path
        }
        lost: list[str] = []
        done = repair(self.root, self.catalog, self._writing(), patterns, lost)
        for s in done:
            log.warning("recording %s: repaired after a crash (%d bytes)", s.path, s.bytes)
        for path in lost:
            log.warning(
                "recording %s: repaired after a crash, but no route's path pattern (or more "
                "than one) matches it: left out of the catalog (retention will not delete it)",
                path,
            )
        self.lost += len(lost)
        return done + self._reconcile()

    def _reconcile(self, settled: float | None = None) -> list[Segment]:
        """Closes from their files the rows a crash or a lost ``segment_closed`` left open
        (``repair.reconcile``)."""
        done = reconcile(self.root, self.catalog, self._writing(), settled)
        for s in done:
            log.warning("recording %s: closed from its file (its close never reached the "
                        "catalog; %d bytes)", s.path, s.bytes)
        self.reconciled += len(done)
        return done

    def start(self) -> None:
        self._thread.start()

    def stats(self) -> dict[str, int]:
        """The figures of the recordings directory that belong to no route: ``lost``, the
        segments repaired after a crash that could not be cataloged."""
        return {"lost": self.lost}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick(self.clock())
            except Exception:
                log.exception("recordings: tick failed")

    # Policy

    def _windows(self, name: str, policy: Recording) -> list[Window] | None:
        if policy.schedule is None:
            return None
        key = (policy.schedule, policy.timezone or "UTC")
        cached = self._schedules.get(name)
        if cached is None or cached[:2] != key:
            cached = (*key, parse_windows(policy.schedule))
            self._schedules[name] = cached
        return cached[2]

    def wanted(self, name: str, policy: Recording, now: float) -> bool:
        """Whether ``name`` should record at ``now``."""
        manual = self._manual.get(name)
        if manual is not None:
            return manual
        if not policy.enabled:
            return False
        windows = self._windows(name, policy)
        return windows is None or active(windows, zone(policy.timezone or "UTC"), now)

    def tick(self, now: float) -> None:
        """One round: every running route's recorder as its policy wants it; retention when
        due."""
        with self._lock:
            policies = self.control.recording_policies()
            self._forget(set(policies))
            self._recording_now = None
            gw = self.control.gateway
            for name in gw.routes():
                policy = policies.get(name)
                if policy is None:
                    continue
                # One route's failure is that route's: the others are still looked after.
                try:
                    self._apply(name, policy, now, policies)
                except CastwayError as e:
                    log.warning("recording of route %s: %s", name, e)
                except Exception:
                    log.exception("recording of route %s failed", name)
            errors = {
                st["name"]: st["recording"]["errors"] for st in self.control.stats()
            }
            failed = any(n > self._errors.get(name, 0) for name, n in errors.items())
            self._errors = errors
            if failed or now - self._last_retention >= RETENTION_EVERY_S:
                self._last_retention = now
                try:
                    self.prune(now)
                except Exception:
                    log.exception("recordings: retention pass failed")

    def _forget(self, routes: set[str]) -> None:
        """Drops what is kept per route for the routes deleted (an operator's start/stop must
        not outlive its route and apply to a new route of the same name)."""
        for kept in (self._manual, self._schedules, self._started, self._floors, self._totals,
                     self._seen):
            for name in [n for n in kept if n not in routes]:
                del kept[name]
        self._slate_paused &= routes

    def _apply(self, name: str, policy: Recording, now: float,
               policies: dict[str, Recording] | None = None) -> None:
        if policies is None:
            policies = self.control.recording_policies()
            self._recording_now = None
        route = self.control.gateway.route(name)
        stats = route.stats()
        self._note_totals(name, stats)
        rec = route.recording
        state = stats["recording"]["state"]
        want = self.wanted(name, policy, now)
        settings = (policy.path, policy.segment_ms, policy.format)
        started = self._started.get(name)
        # An operator's pause (not the slate's) outlives a restart for a policy change.
        keep_paused = False
        if want and state != "stopped" and started is not None and started != settings:
            # Segment length, path and format are the recorder's: a change restarts it (the
            # open segment closes at once, the next opens at the next keyframe).
            keep_paused = state == "paused" and name not in self._slate_paused
            rec.stop()
            state = "stopped"
        if want and state == "stopped":
            rec.start(
                self.root, path=policy.path, segment_ms=policy.segment_ms, format=policy.format,
                min_free_bytes=self._floor(name, policies),
            )
            if keep_paused:
                rec.pause()
            self._started[name] = settings
            self._slate_paused.discard(name)
        elif not want and state != "stopped":
            rec.stop()
            self._slate_paused.discard(name)
            self._started.pop(name, None)
            self._floors.pop(name, None)
            return
        if not want:
            return
        floor = self._floor(name, policies)
        if self._floors.get(name) != floor:
            rec.set_min_free(floor)
            self._floors[name] = floor
        on_slate = stats["state"] == "slate" and policy.slate is False
        if on_slate and name not in self._slate_paused and state != "paused":
            rec.pause()
            self._slate_paused.add(name)
        elif not on_slate and name in self._slate_paused:
            rec.resume()
            self._slate_paused.discard(name)

    def _floor(self, name: str, policies: dict[str, Recording]) -> int:
        """The free-space floor a segment of ``name`` must find to open: retention's (the
        largest of the routes recording, ``name`` with them)."""
        if self._recording_now is None:
            self._recording_now = self._recording()
        return self.retention.floor(policies, self._recording_now | {name})

    def _recording(self) -> frozenset[str]:
        return frozenset(
            s["name"] for s in self.control.stats() if s["recording"]["state"] != "stopped"
        )

    def prune(self, now: float) -> Pass:
        """One retention pass over every route's policy, and over the segments of the routes
        deleted by their last policy's ``max_age_s`` and ``max_bytes``."""
        policies = self._retention_policies(self.control.recording_policies())
        recording = self._recording()
        self._reconcile(settled=now - SETTLE_S)
        self.last_pass = self.retention.run(policies, now, self._writing(), recording)
        return self.last_pass

    def _retention_policies(self, policies: dict[str, Recording]) -> dict[str, Recording]:
        """``policies``, and for each route gone that left segments, the retention limits of
        its last policy (kept in the store, so a restart keeps them too)."""
        if self._kept is None:
            self._kept = self.catalog.retention()
        for name, policy in policies.items():
            limits = (policy.max_age_s, policy.max_bytes)
            if self._kept.get(name) != limits:
                self.catalog.keep_retention(name, *limits)
                self._kept[name] = limits
        gone = [name for name in self._kept if name not in policies]
        if not gone:
            return policies
        left = self.catalog.route_bytes()
        done = [name for name in gone if name not in left]
        if done:
            # Nothing of them is left to prune.
            self.catalog.forget_retention(done)
            for name in done:
                del self._kept[name]
        return {
            **{name: Recording(max_age_s=self._kept[name][0], max_bytes=self._kept[name][1])
               for name in gone if name in self._kept},
            **policies,
        }

    def _writing(self) -> frozenset[str]:
        """The segments the running routes write now."""
        return frozenset(
            s["recording"]["segment"] for s in self.control.stats() if s["recording"]["segment"]
        )

    def _note_totals(self, name: str, stats: RouteStats) -> None:
        """Keeps what the last route of ``name`` did when a new one of that name is seen."""
        rec: dict[str, Any] = dict(stats["recording"])
        figures = {k: int(rec[f"{k}_all"]) for k in ("segments", "bytes", "drops", "errors")}
        seen = self._seen.get(name)
        if seen is not None and stats["uptime_s"] < seen[0]:
            done = self._totals.setdefault(name, {})
            for k, v in seen[1].items():
                done[k] = done.get(k, 0) + v
        self._seen[name] = (stats["uptime_s"], figures)

    def metrics(self) -> dict[str, object]:
        """What the metrics read of the recordings: each route's totals of its earlier
        recorders, the open segments' starts (by path), retention's deletions by reason and
        its failed deletions, and the segments repaired but left out of the catalog (``lost``)."""
        with self._lock:
            totals = {name: dict(t) for name, t in self._totals.items()}
        return {
            "totals": totals,
            "segment_start": {s.path: s.start for s in self.catalog.opened(MAX_OPEN_LISTED)},
            "deleted": dict(self.deleted),
            "failures": self.retention.failures,
            "lost": self.lost,
        }

    def _report_deleted(self, route: str, path: str, reason: str) -> None:
        self.deleted[reason] = self.deleted.get(reason, 0) + 1
        self.control.gateway.emit(
            "recording_deleted", route=route,
            segment=json.dumps({"path": path, "reason": reason}, separators=(",", ":")),
        )

    def _report_undeletable(self, route: str, path: str, error: str) -> None:
        # Without `segment`: its row stays in the catalog (see `CatalogSink`).
        self.control.gateway.emit("recording_error", route=route, error=error)

    # The operator's control

    def _route(self, name: str) -> Route:
        try:
            return self.control.gateway.route(name)
        except CastwayError:
            raise NotFound(f"route {name!r} is not running") from None

    def start_recording(self, name: str) -> None:
        with self._lock:
            self._route(name)
            self._manual[name] = True
            policy = self.control.recording_policies().get(name, Recording())
            self._apply(name, policy, self.clock())

    def stop_recording(self, name: str) -> None:
        with self._lock:
            self._route(name)
            self._manual[name] = False
            policy = self.control.recording_policies().get(name, Recording())
            self._apply(name, policy, self.clock())

    def pause_recording(self, name: str, pause: bool) -> None:
        with self._lock:
            route = self._route(name)
            try:
                if pause:
                    route.recording.pause()
                else:
                    route.recording.resume()
            except CastwayError:
                raise FailedPrecondition(f"route {name!r} is not recording") from None

    def status(self, name: str) -> RecordingStats:
        return self._route(name).recording.stats()

    def segments(self, name: str, start: float | None, end: float | None,
                 page_size: int = 0, page_token: str = "") -> tuple[list[Segment], str]:
        """One page of the segments of ``name`` overlapping ``[start, end)``, oldest first,
        and the token of the next page ("" at the end). ``page_size`` 0 is the server's
        default page size; above its maximum, the maximum (as ``ListRoutes``)."""
        if start is not None and end is not None and end < start:
            raise InvalidArgument("to", "is before `from`")
        limits = self.control.limits
        size = min(page_size or limits.default_page_size, limits.max_page_size)
        after = _after(page_token) if page_token else None
        segs = self.catalog.between(name, start, end, limit=size + 1, after=after)
        if not segs and after is None and name not in self.control.recording_policies() and not (
            self.catalog.between(name, None, None, limit=1)
        ):
            raise NotFound(f"no route {name!r} and no recording of one")
        page, more = segs[:size], len(segs) > size
        token = ""
        if more:
            last = page[-1]
            token = base64.urlsafe_b64encode(
                json.dumps(["s", last.start, last.path]).encode()
            ).decode()
        return page, token

    def clip_dir(self) -> contextlib.AbstractContextManager[Path]:
        """A directory of its own for one clip's files, under ``CLIPS`` in the recordings
        directory (the volume the free-space floor guards, not the system's temporary
        directory); removed with what is in it on the way out."""

        @contextlib.contextmanager
        def made() -> Iterator[Path]:
            (self.root / CLIPS).mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="clip-", dir=self.root / CLIPS))
            try:
                yield tmp
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        return made()

    def clip_floor(self) -> int:
        """The free space a clip must leave on the recordings volume: retention's floor."""
        return self.retention.floor(self.control.recording_policies(), self._recording())

    def clip(self) -> contextlib.AbstractContextManager[None]:
        """Holds one of the ``max_clips`` places of the clips being made; refuses
        (``RESOURCE_EXHAUSTED``) when none is free."""
        limit = self.control.limits.max_clips

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            with self._clips_lock:
                if self._clips >= limit:
                    raise ResourceExhausted(
                        f"{self._clips} clips are being exported, the most at once "
                        f"(limits.max_clips = {limit}): try again when one is done"
                    )
                self._clips += 1
            try:
                yield
            finally:
                with self._clips_lock:
                    self._clips -= 1

        return held()


def _after(token: str) -> tuple[float, str]:
    """The (start, path) a ``ListSegments`` page token stands for."""
    try:
        kind, start, path = json.loads(base64.urlsafe_b64decode(token.encode()))
        if kind == "s" and isinstance(path, str):
            return float(start), path
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        pass
    raise InvalidArgument("page_token", "is not a token this server gave out")
