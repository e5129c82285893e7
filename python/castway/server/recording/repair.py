"""Segments a crash left open: ``NAME.ts.part`` and ``NAME.mp4.part`` files, repaired when the
server starts.

A TS ``.part`` is cut to its last whole packet (what a ``kill -9`` or a power cut left of the
last write); an MP4 one to its last whole fragment (``moof`` + ``mdat``; one without its
``moov`` holds nothing playable and goes). It is renamed to ``NAME.ts``/``NAME.mp4`` and
cataloged with ``repaired`` set: a TS segment's duration and keyframe times read from its video
timestamps (an MP4's duration from ffprobe, when there is one), its end from the file's last
change.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

from castway.server.recording.catalog import Catalog, Segment
from castway.server.recording.retention import within

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


def mp4_whole(data: bytes) -> int:
    """How much of a fragmented MP4 is whole: up to the end of its last complete ``mdat``
    after its ``moov`` (0 without a complete ``moov``)."""
    off, keep, moov = 0, 0, False
    while off + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[off:off + 8])
        if size == 1 and off + 16 <= len(data):
            size = struct.unpack(">Q", data[off + 8:off + 16])[0]
        if size < 8 or off + size > len(data):
            break
        off += size
        if kind == b"moov":
            moov = True
        if moov and kind in (b"moov", b"mdat", b"mfra"):
            keep = off
    return keep if moov else 0


def _probe_duration(path: Path) -> float:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return 0.0
    r = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(path)], capture_output=True, text=True, timeout=60, check=False,
    )
    try:
        return float(r.stdout.strip())
    except ValueError:
        return 0.0


def repair(root: Path, catalog: Catalog, writing: frozenset[str] = frozenset()) -> list[Segment]:
    """Repairs and catalogs every ``.part`` under ``root`` but those of the segments in
    ``writing`` (relative paths being written now); returns what it cataloged."""
    done: list[Segment] = []
    parts = [*root.rglob("*.ts.part"), *root.rglob("*.mp4.part")]
    for part in sorted(parts)[:MAX_REPAIRS]:
        if part.is_symlink() or not part.is_file():
            continue
        rel_part = part.relative_to(root).as_posix()
        rel = rel_part[: -len(".part")]
        if rel in writing or not within(root, rel_part):
            continue
        mp4 = rel.endswith(".mp4")
        size = part.stat().st_size
        if mp4:
            whole = mp4_whole(part.read_bytes())
        else:
            whole = size - size % TS
        if whole == 0:
            # Opened, nothing reached the disk: nothing to keep, nor to list.
            part.unlink()
            catalog.remove([rel])
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
        duration, keys = (_probe_duration(final), []) if mp4 else timing(data)
        mtime = final.stat().st_mtime
        known = catalog.get(rel)
        route = known.route if known else rel.split("/", 1)[0]
        start = known.start if known else mtime - duration
        seg = Segment(
            path=rel, route=route, format="mp4" if mp4 else "ts", start=start,
            end=max(mtime, start + duration), duration=duration, bytes=whole,
            psi=mp4 or data[1:3] == b"\x40\x00", repaired=True,
            keyframes=tuple(keys),
        )
        catalog.add(replace(seg, open=False))
        done.append(seg)
    return done
