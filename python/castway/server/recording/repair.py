"""Segments a crash left open: ``NAME.ts.part`` and ``NAME.mp4.part`` files, repaired when the
server starts.

A TS ``.part`` is cut to its last whole packet: one that starts with the sync byte and is
followed by another that does, or ends the file (what a ``kill -9`` or a power cut left of the
last write: a torn packet, a tail of zeros or garbage, goes); an MP4 one
to its last whole fragment (``moof`` + ``mdat``; one without its ``moov`` holds nothing
playable and goes). The file is cut in place, found reading back from its end in bounded
chunks, never read whole. It is renamed to ``NAME.ts``/``NAME.mp4`` and
cataloged with ``repaired`` set: a TS segment's duration and keyframe times read from its video
timestamps alone (an MP4's from ffprobe, when there is one; keyframe times in order), its end
its start (as cataloged when it opened) plus that duration, or, without that row, the file's
last change before the repair. A file without its row goes to the route whose path pattern
its path matches, and to none (repaired, not cataloged, logged) when that is not exactly one
route.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from castway.server.recording.catalog import Catalog, Segment
from castway.server.recording.retention import open_dir

TS = 188
WRAP = 1 << 33
# `.part` files one start repairs at most (the rest at the next start).
MAX_REPAIRS = 1000
# Bytes read at a time (a whole number of packets): a repair never holds a file in memory.
CHUNK = TS * 5577


def _pes(p: bytes) -> tuple[int, int] | None:
    """The stream id and PTS of the PES header packet ``p`` starts, if it has both."""
    if not p[1] & 0x40 or not p[3] & 0x10:
        return None
    off = 4 + (1 + p[4] if p[3] & 0x20 else 0)
    pes = p[off:]
    if len(pes) < 14 or pes[:3] != b"\x00\x00\x01" or not pes[7] & 0x80:
        return None
    b = pes[9:14]
    pts = ((b[0] >> 1 & 7) << 30) | (b[1] << 22) | ((b[2] >> 1) << 15) | (b[3] << 7) | (b[4] >> 1)
    return pes[3], pts


def _pts(p: bytes) -> int | None:
    pes = _pes(p)
    return None if pes is None else pes[1]


def _is_video(stream_id: int) -> bool:
    """A video PES stream id (ISO/IEC 13818-1: 0xE0-0xEF)."""
    return stream_id & 0xF0 == 0xE0


class _Track:
    """Timestamps seen: the first, the furthest after it, the last, and the shortest step
    between two in a row (one frame)."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.furthest = 0
        self.last: int | None = None
        self.frame = 0

    def see(self, pts: int) -> int:
        """Takes ``pts``; returns how far after the first it is (``WRAP // 2`` or more: before
        it, a frame shown before the first, such as a B-frame)."""
        if self.first is None:
            self.first = pts
        ahead = (pts - self.first) % WRAP
        if ahead < WRAP // 2:
            self.furthest = max(self.furthest, ahead)
        if self.last is not None and 0 < (step := (pts - self.last) % WRAP) < 90_000:
            self.frame = min(self.frame, step) if self.frame else step
        self.last = pts
        return ahead

    def duration(self) -> float:
        return (self.furthest + self.frame) / 90_000


def timing(chunks: Iterable[bytes]) -> tuple[float, list[float]]:
    """The duration and the keyframe times of a TS segment, from its video timestamps alone:
    from its first video frame to its furthest, plus one frame, and the times of the video
    packets that are random access points, in order (audio timestamps run ahead of or behind
    the video's, and audio packets may be random access points too). A segment without video
    takes its duration from every stream's timestamps and has no keyframes. ``chunks`` are
    its bytes in order, each a whole number of packets."""
    video, every = _Track(), _Track()
    keys: set[float] = set()
    for data in chunks:
        for off in range(0, len(data) - TS + 1, TS):
            p = data[off:off + TS]
            if p[0] != 0x47:
                continue
            pes = _pes(p)
            if pes is None:
                continue
            stream_id, pts = pes
            every.see(pts)
            if not _is_video(stream_id):
                continue
            ahead = video.see(pts)
            rai = bool(p[3] & 0x20 and p[4] > 0 and p[5] & 0x40)
            if rai and ahead < WRAP // 2 and len(keys) < 3600:
                keys.add(round(ahead / 90_000, 3))
    track = video if video.first is not None else every
    return track.duration(), sorted(keys)


def first_pts(data: bytes) -> int | None:
    """The first PES timestamp in ``data`` (the start of a TS file, a whole number of
    packets), if any."""
    for off in range(0, len(data) - TS + 1, TS):
        p = data[off:off + TS]
        if p[0] == 0x47 and (pts := _pts(p)) is not None:
            return pts
    return None


def read_chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    """``f``'s first ``size`` bytes, ``CHUNK`` at a time."""
    f.seek(0)
    done = 0
    while done < size:
        data = f.read(min(CHUNK, size - done))
        if not data:
            return
        done += len(data)
        yield data


def ts_whole(f: BinaryIO, size: int) -> int:
    """How much of a TS file is whole: up to the end of its last packet that starts with the
    sync byte and is followed by another that does (or ends the file exactly), found reading
    back from the end ``CHUNK`` at a time. A crash can leave a torn packet and a tail of zeros
    or of anything: a torn packet is followed by no sync byte."""
    end = size - size % TS
    # Whether what follows the slot looked at starts a packet (or is the very end of the file).
    after = True
    if size % TS:
        f.seek(end)
        after = f.read(1) == b"\x47"
    while end > 0:
        start = max(0, end - CHUNK)
        f.seek(start)
        data = f.read(end - start)
        for off in range(len(data) - TS, -1, -TS):
            sync = data[off] == 0x47
            if sync and after:
                return start + off + TS
            after = sync
        end = start
    return 0


def mp4_whole(f: BinaryIO, size: int) -> int:
    """How much of a fragmented MP4 is whole: up to the end of its last complete ``mdat``
    after its ``moov`` (0 without a complete ``moov``); read box header by box header."""
    off, keep, moov = 0, 0, False
    while off + 8 <= size:
        f.seek(off)
        head = f.read(16)
        if len(head) < 8:
            break
        box, kind = struct.unpack(">I4s", head[:8])
        if box == 1 and len(head) == 16:
            box = struct.unpack(">Q", head[8:16])[0]
        if box < 8 or off + box > size:
            break
        off += box
        if kind == b"moov":
            moov = True
        if moov and kind in (b"moov", b"mdat", b"mfra"):
            keep = off
    return keep if moov else 0


def _probe_mp4(path: Path) -> tuple[float, list[float]]:
    """An MP4's duration and its video keyframe times (from its first video packet, in
    order), from ffprobe; (0, []) without it."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return 0.0, []
    r = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "format=duration:packet=pts_time,flags", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    try:
        info = json.loads(r.stdout)
        duration = float(info.get("format", {}).get("duration", 0.0))
    except (ValueError, TypeError):
        return 0.0, []
    times = [(float(p["pts_time"]), "K" in p.get("flags", ""))
             for p in info.get("packets", []) if "pts_time" in p]
    if not times:
        return duration, []
    first = min(t for t, _ in times)
    keys = sorted({round(t - first, 3) for t, key in times if key})
    return duration, keys[:3600]


def repair(
    root: Path, catalog: Catalog, writing: frozenset[str] = frozenset(),
    patterns: Mapping[str, str] | None = None, lost: list[str] | None = None,
) -> list[Segment]:
    """Repairs and catalogs every ``.part`` under ``root`` but those of the segments in
    ``writing`` (relative paths being written now); returns what it cataloged. Each file is
    opened relative to its directory, itself opened without following a link (``open_dir``),
    and cut in place: never read whole. A file without its catalog row (its opening never
    reached the catalog) belongs to the one route of ``patterns`` (route name: path pattern)
    whose pattern its path matches; matching none, or more than one, it is repaired but not
    cataloged, and its path added to ``lost``."""
    done: list[Segment] = []
    parts = [*root.rglob("*.ts.part"), *root.rglob("*.mp4.part")]
    for part in sorted(parts)[:MAX_REPAIRS]:
        rel_part = part.relative_to(root).as_posix()
        rel = rel_part[: -len(".part")]
        if rel in writing:
            continue
        rel_dir, name = posixpath.split(rel_part)
        final_name = name[: -len(".part")]
        try:
            dir_fd = open_dir(root, rel_dir)
        except OSError:
            continue  # reached through a link, or gone
        try:
            seg = _repair_one(dir_fd, name, final_name, rel, root, catalog, patterns or {})
        finally:
            os.close(dir_fd)
        if isinstance(seg, Segment):
            done.append(seg)
        elif seg is not None and lost is not None:
            lost.append(seg)
    return done


def _repair_one(dir_fd: int, name: str, final_name: str, rel: str, root: Path,
                catalog: Catalog, patterns: Mapping[str, str]) -> Segment | str | None:
    """The segment cataloged; or ``rel`` when its route is not known (repaired, not
    cataloged); or ``None``."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None  # a link, or gone
    mp4 = rel.endswith(".mp4")
    with os.fdopen(fd, "r+b") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        whole = mp4_whole(f, st.st_size) if mp4 else ts_whole(f, st.st_size)
        if whole == 0:
            # Opened, nothing reached the disk: nothing to keep, nor to list.
            os.unlink(name, dir_fd=dir_fd)
            catalog.remove([rel])
            return None
        os.truncate(f.fileno(), whole)
        os.fsync(f.fileno())
        f.seek(0)
        psi = f.read(3)[1:3] == b"\x40\x00"
        duration, keys = (0.0, []) if mp4 else timing(read_chunks(f, whole))
    try:
        os.stat(final_name, dir_fd=dir_fd, follow_symlinks=False)
        return None  # the name is taken
    except FileNotFoundError:
        pass
    os.rename(name, final_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if mp4:
        duration, keys = _probe_mp4(root / rel)
    known = catalog.get(rel)
    route = known.route if known else route_of(rel, patterns)
    if route is None:
        return rel
    # Its times from its content: from its start (as cataloged when it opened) on by its
    # media duration; without that row, it ends at its last write (its change time read
    # before the cut, which changes it to now) and starts its duration before.
    if known:
        start = known.start
        end = start + duration if duration > 0 else max(st.st_mtime, start)
    else:
        end = st.st_mtime
        start = end - duration
    seg = Segment(
        path=rel, route=route, format="mp4" if mp4 else "ts", start=start, end=end,
        duration=duration, bytes=whole, psi=mp4 or psi, repaired=True, keyframes=tuple(keys),
    )
    catalog.add(replace(seg, open=False))
    return seg


# What each strftime field of a path pattern expands to (rust/record/path.rs `FIELDS`).
_FIELDS = {
    "Y": r"\d{4}", "G": r"\d{4}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "M": r"\d{2}",
    "S": r"\d{2}", "V": r"\d{2}", "g": r"\d{2}", "j": r"\d{3}", "u": r"\d", "z": r"[+-]\d{4}",
    "s": r"\d+", "%": "%",
}


def _pattern_re(pattern: str) -> re.Pattern[str]:
    """A path pattern as a regular expression matching the segment paths it expands to
    (``-N`` when two start within a second, then ``.ts`` or ``.mp4``)."""
    out, named, i = [], False, 0
    while i < len(pattern):
        if pattern.startswith("{route}", i):
            out.append("(?P=route)" if named else "(?P<route>[^/]+)")
            named, i = True, i + len("{route}")
        elif pattern[i] == "%" and i + 1 < len(pattern):
            out.append(_FIELDS.get(pattern[i + 1], "[^/]*"))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"(?:-\d+)?\.(?:ts|mp4)")


def route_of(rel: str, patterns: Mapping[str, str]) -> str | None:
    """The one route whose path pattern ``rel`` matches (a ``{route}`` in it standing for
    that route's name); ``None`` for none or more than one."""
    found = set()
    for name, pattern in patterns.items():
        m = _pattern_re(pattern).fullmatch(rel)
        if m and m.groupdict().get("route", name) == name:
            found.add(name)
    return found.pop() if len(found) == 1 else None


# Open rows ``reconcile`` looks at per call (the rest at the next).
MAX_RECONCILE = 1000


def close_from_file(root: Path, catalog: Catalog, seg: Segment) -> Segment | None:
    """Closes the open row ``seg`` from its final file (``NAME.ts``/``NAME.mp4``, whole: the
    writer renames a segment only once it is flushed), when that file is there and its
    ``.part`` is not: its bytes, and its duration, end and keyframes from its content as
    ``repair`` reads them. What a crash between the rename and the catalog's write, or a
    ``segment_closed`` event the catalog never got, leaves. Returns the segment closed, or
    ``None`` (no such file, or the row was closed meanwhile)."""
    rel_dir, name = posixpath.split(seg.path)
    try:
        dir_fd = open_dir(root, rel_dir)
    except OSError:
        return None
    try:
        if _exists_at(dir_fd, name + ".part"):
            return None  # still to repair (`repair`)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return None
    finally:
        os.close(dir_fd)
    mp4 = seg.path.endswith(".mp4")
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        psi = f.read(3)[1:3] == b"\x40\x00"
        duration, keys = (0.0, []) if mp4 else timing(read_chunks(f, st.st_size))
    if mp4:
        duration, keys = _probe_mp4(root / seg.path)
    end = seg.start + duration if duration > 0 else max(st.st_mtime, seg.start)
    closed = replace(
        seg, end=end, duration=duration, bytes=st.st_size, psi=mp4 or psi, repaired=True,
        keyframes=tuple(keys), open=False,
    )
    return closed if catalog.close_open(closed) else None


def reconcile(root: Path, catalog: Catalog, writing: frozenset[str] = frozenset(),
              settled: float | None = None) -> list[Segment]:
    """Closes from their files (``close_from_file``) the rows still open that no route writes
    now (``writing``) and whose final file is there; with ``settled``, only those whose file
    last changed before it (a ``segment_closed`` on its way to the catalog has time to land
    first). Looks at ``MAX_RECONCILE`` rows at most; returns those closed."""
    done = []
    for seg in catalog.opened(MAX_RECONCILE):
        if seg.path in writing:
            continue
        if settled is not None:
            try:
                st = os.stat(root / seg.path, follow_symlinks=False)
            except OSError:
                continue
            if st.st_mtime >= settled:
                continue
        closed = close_from_file(root, catalog, seg)
        if closed is not None:
            done.append(closed)
    return done


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
