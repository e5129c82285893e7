"""The recordings catalog: one SQLite row per closed segment, in the server's store.

Rows come from the data plane's ``segment_closed`` events (``CatalogSink``), from segments
repaired at start (``repair``), and go when retention deletes a file or finds it gone. A time
range maps to its segments through the ``(route, start)`` index: a segment that lasts at most
``MAX_SEGMENT_S`` and overlaps ``[from, to)`` starts in ``[from - MAX_SEGMENT_S, to)``; the
few that last longer (a source without keyframes, a repaired one) have an index of their own
(``segments_long``, partial), so the query finds them too.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from castway.gateway import Event
from castway.server.events import QueuedSink
from castway.server.store import Store

# Segments last at most this long but for a few (no keyframe for hours; repaired ones),
# indexed on their own: the literal of `segments_long` in the store's migrations.
MAX_SEGMENT_S = 2 * 3600.0
_LONG = "end - start > 7200.0"
# Segments a clip joins at most (a wider range is refused, never cut).
MAX_LIST = 10_000
# How long a full catalog queue holds the event dispatch before it drops an event.
OFFER_WAIT_S = 2.0


@dataclass(frozen=True)
class Segment:
    path: str
    route: str
    format: str
    start: float
    end: float
    duration: float
    bytes: int
    psi: bool = True
    switch: bool = False
    gap: bool = False
    repaired: bool = False
    keyframes: tuple[float, ...] = field(default_factory=tuple)
    # Being written (a `segment_opened` seen, no `segment_closed` yet).
    open: bool = False

    @staticmethod
    def from_event(route: str, record: dict[str, Any]) -> Segment:
        return Segment(
            path=str(record["path"]),
            route=route,
            format=str(record.get("format", "ts")),
            start=float(record["start"]),
            end=float(record["end"]),
            duration=float(record["duration"]),
            bytes=int(record["bytes"]),
            psi=bool(record.get("psi", True)),
            switch=bool(record.get("switch", False)),
            gap=bool(record.get("gap", False)),
            keyframes=tuple(float(k) for k in record.get("keyframes", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keyframes"] = list(self.keyframes)
        return d


def _row(r: dict[str, Any]) -> Segment:
    return Segment(
        path=r["path"], route=r["route"], format=r["format"], start=r["start"], end=r["end"],
        duration=r["duration"], bytes=r["bytes"], psi=bool(r["psi"]), switch=bool(r["switch"]),
        gap=bool(r["gap"]), repaired=bool(r["repaired"]),
        keyframes=tuple(json.loads(r["keyframes"])), open=bool(r["open"]),
    )


class Catalog:
    """The ``segments`` table of ``store``. Thread-safe (the store's lock)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, s: Segment) -> None:
        with self._store._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO segments (path, route, format, start, end, duration, "
                "bytes, psi, switch, gap, repaired, keyframes, open) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s.path, s.route, s.format, s.start, s.end, s.duration, s.bytes, s.psi,
                 s.switch, s.gap, s.repaired, json.dumps(list(s.keyframes)), s.open),
            )

    def close_open(self, s: Segment) -> bool:
        """Catalogs ``s`` as closed if its row is still open (a ``segment_closed`` that came
        first, with more to tell, is never overwritten); returns whether it did."""
        with self._store._tx() as db:
            cur = db.execute(
                "UPDATE segments SET end = ?, duration = ?, bytes = ?, psi = ?, repaired = ?, "
                "keyframes = ?, open = 0 WHERE path = ? AND open = 1",
                (s.end, s.duration, s.bytes, s.psi, s.repaired, json.dumps(list(s.keyframes)),
                 s.path),
            )
            return bool(cur.rowcount)

    def opened(self, limit: int) -> list[Segment]:
        """Rows still open (being written, or left open by a crash or a lost event), oldest
        first, at most ``limit``."""
        rows = self._store._query(
            "SELECT * FROM segments WHERE open = 1 ORDER BY start LIMIT ?", limit
        )
        return [_row(r) for r in rows]

    def remove(self, paths: list[str]) -> None:
        with self._store._tx() as db:
            db.executemany("DELETE FROM segments WHERE path = ?", [(p,) for p in paths])

    def get(self, path: str) -> Segment | None:
        rows = self._store._query("SELECT * FROM segments WHERE path = ?", path)
        return _row(rows[0]) if rows else None

    def between(
        self, route: str, start: float | None = None, end: float | None = None,
        limit: int = MAX_LIST, after: tuple[float, str] | None = None,
    ) -> list[Segment]:
        """The segments of ``route`` overlapping ``[start, end)``, oldest first (by start,
        then path), at most ``limit``; ``after``: only those after this (start, path), the
        last of the page before."""
        lo = -1e18 if start is None else start
        hi = 1e18 if end is None else end
        page, page_args = "", list[object]()
        if after is not None:
            page = " AND (start > ? OR (start = ? AND path > ?))"
            page_args = [after[0], after[0], after[1]]
        # Those that last up to MAX_SEGMENT_S, by the (route, start) index; and the longer
        # ones, by their partial index (the same rows twice are one: UNION).
        sql = (
            "SELECT * FROM segments WHERE route = ? AND start >= ? AND start < ? AND end > ? "
            f"AND open = 0{page} "
            f"UNION SELECT * FROM segments WHERE route = ? AND {_LONG} AND start < ? "
            f"AND end > ? AND open = 0{page} ORDER BY start, path LIMIT ?"
        )
        rows = self._store._query(
            sql, route, lo - MAX_SEGMENT_S, hi, lo, *page_args, route, hi, lo, *page_args, limit
        )
        return [_row(r) for r in rows]

    def oldest(self, limit: int, route: str | None = None,
               before: float | None = None) -> list[Segment]:
        """The oldest segments (of ``route``; starting before ``before``), oldest first."""
        sql, args = "SELECT * FROM segments WHERE open = 0", list[object]()
        if route is not None:
            sql += " AND route = ?"
            args.append(route)
        if before is not None:
            sql += " AND start < ?"
            args.append(before)
        rows = self._store._query(sql + " ORDER BY start LIMIT ?", *args, limit)
        return [_row(r) for r in rows]

    def route_bytes(self) -> dict[str, int]:
        rows = self._store._query(
            "SELECT route, SUM(bytes) AS b FROM segments WHERE open = 0 GROUP BY route"
        )
        return {r["route"]: int(r["b"]) for r in rows}

    def newest(self, before: tuple[float, str] | None, limit: int) -> list[Segment]:
        """Segments newest first (by start, then path), those before ``before`` (the
        (start, path) of the last of the page before): to look at every row a bounded bit at
        a time, the newest first."""
        if before is None:
            rows = self._store._query(
                "SELECT * FROM segments ORDER BY start DESC, path DESC LIMIT ?", limit
            )
        else:
            rows = self._store._query(
                "SELECT * FROM segments WHERE start < ? OR (start = ? AND path < ?) "
                "ORDER BY start DESC, path DESC LIMIT ?", before[0], before[0], before[1], limit
            )
        return [_row(r) for r in rows]

    def count(self) -> int:
        return int(self._store._query("SELECT COUNT(*) AS n FROM segments")[0]["n"])

    def retention(self) -> dict[str, tuple[int | None, int | None]]:
        """Each route's retention limits as last kept: (``max_age_s``, ``max_bytes``)."""
        rows = self._store._query("SELECT * FROM retention")
        return {r["route"]: (r["max_age_s"], r["max_bytes"]) for r in rows}

    def keep_retention(self, route: str, max_age_s: int | None, max_bytes: int | None) -> None:
        with self._store._tx() as db:
            db.execute("INSERT OR REPLACE INTO retention (route, max_age_s, max_bytes) "
                       "VALUES (?, ?, ?)", (route, max_age_s, max_bytes))

    def forget_retention(self, routes: list[str]) -> None:
        with self._store._tx() as db:
            db.executemany("DELETE FROM retention WHERE route = ?", [(r,) for r in routes])

    def page(self, after: str, limit: int) -> list[Segment]:
        """Segments by path after ``after`` (to look at every row a bounded bit at a time)."""
        rows = self._store._query(
            "SELECT * FROM segments WHERE path > ? ORDER BY path LIMIT ?", after, limit
        )
        return [_row(r) for r in rows]


class CatalogSink(QueuedSink):
    """Catalogs each ``segment_opened`` (as open) and ``segment_closed`` event of the data
    plane. A full queue holds the dispatch up to ``OFFER_WAIT_S`` before it drops an event
    (counted in ``dropped``): a row a dropped event leaves open is closed from its file by
    ``reconcile`` (retention's pass, the next start)."""

    drain = True

    def __init__(self, catalog: Catalog, size: int = 10_000) -> None:
        super().__init__("catalog", size)
        self._catalog = catalog

    def offer(self, event: Event) -> None:
        if not self.wants(event):
            return
        try:
            self._queue.put(event, timeout=OFFER_WAIT_S)
        except queue.Full:
            self.dropped += 1

    def wants(self, event: Event) -> bool:
        return event["kind"] in ("segment_opened", "segment_closed") or (
            event["kind"] == "recording_error" and bool(event.get("segment"))
        )

    def handle(self, event: Event) -> None:
        record = json.loads(event.get("segment", "{}"))
        route = event.get("route", "")
        if event["kind"] == "recording_error":
            # A segment whose close failed (its rename): not listed as being written any more.
            known = self._catalog.get(str(record["path"]))
            if known is not None and known.open:
                self._catalog.remove([known.path])
        elif event["kind"] == "segment_opened":
            start = float(record["start"])
            self._catalog.add(Segment(
                path=str(record["path"]), route=route, format=str(record.get("format", "ts")),
                start=start, end=start, duration=0.0, bytes=0, open=True,
            ))
        else:
            self._catalog.add(Segment.from_event(route, record))


def iter_all(catalog: Catalog, page: int = 500) -> Iterator[Segment]:
    after = ""
    while True:
        rows = catalog.page(after, page)
        if not rows:
            return
        yield from rows
        after = rows[-1].path
