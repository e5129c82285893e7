"""Segments a crash left open: ``NAME.ts.part`` files, repaired when the server starts.

A ``.part`` is cut to its last whole packet (what a ``kill -9`` or a power cut left of the
last write), renamed to ``NAME.ts`` and cataloged with ``repaired`` set: its duration and
keyframe times read from its video timestamps, its end from the file's last change.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from castway.server.recording.catalog import Catalog, Segment

TS = 188
WRAP = 1 << 33
# `.part` files one start repairs at most (the rest at the next start).
MAX_REPAIRS = 1000


def _pts(p: bytes) -> int | None:
    if not p[1] & 0x40 or not p[3] & 0x10:
        return None
    off = 4 + (1 + p[4] if p[3] & 0x20 else 0)
    pes = p[off:]
    if len(pes) < 14 or pes[:3] != b"\x00\x00\x01" or not pes[7] & 0x80:
        return None
    b = pes[9:14]
    return ((b[0] >> 1 & 7) << 30) | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) | (b[4] >> 1)


def timing(data: bytes) -> tuple[float, list[float]]:
    """The duration (from the first PES timestamp to the last, plus one frame) and the
    keyframe times of a TS segment, read from its random access points."""
    first = last = before = None
    keys: list[float] = []
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if p[0] != 0x47:
            continue
        pts = _pts(p)
        if pts is None:
            continue
        if first is None:
            first = pts
        before, last = last, pts
        rai = bool(p[3] & 0x20 and p[4] > 0 and p[5] & 0x40)
        if rai and len(keys) < 3600:
            keys.append(round(((pts - first) % WRAP) / 90_000, 3))
    if first is None or last is None:
        return 0.0, keys
    frame = ((last - before) % WRAP) if before is not None else 0
    return ((last - first) % WRAP + min(frame, 90_000)) / 90_000, keys


def repair(root: Path, catalog: Catalog) -> list[Segment]:
    """Repairs and catalogs every ``.part`` under ``root``; returns what it cataloged."""
    done: list[Segment] = []
    for part in sorted(root.rglob("*.ts.part"))[:MAX_REPAIRS]:
        if part.is_symlink() or not part.is_file():
            continue
        rel_part = part.relative_to(root).as_posix()
        rel = rel_part[: -len(".part")]
        size = part.stat().st_size
        whole = size - size % TS
        if whole == 0:
            # Opened, nothing reached the disk: nothing to keep.
            part.unlink()
            continue
        with open(part, "r+b") as f:
            f.truncate(whole)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            data = f.read()
        final = root / rel
        if final.exists():
            continue
        os.rename(part, final)
        duration, keys = timing(data)
        mtime = final.stat().st_mtime
        known = catalog.get(rel)
        route = known.route if known else rel.split("/", 1)[0]
        start = known.start if known else mtime - duration
        seg = Segment(
            path=rel, route=route, format="ts", start=start, end=max(mtime, start + duration),
            duration=duration, bytes=whole, psi=data[1:3] == b"\x40\x00", repaired=True,
            keyframes=tuple(keys),
        )
        catalog.add(replace(seg, open=False))
        done.append(seg)
    return done
