"""Clips: one file covering a time range of a route's recording (``ExportClip``,
``castway recording export``).

The segments overlapping the range come from the catalog. They are exact slices of the
route's output, so put end to end they are the stream itself, timestamps running on across
their boundaries; ffmpeg then cuts the range out of that with stream copy (no re-encoding),
from the keyframe at or before its start (``-ss`` before ``-i``), and remuxes it to ``mp4``
when asked (``-movflags +faststart``). A wall-clock time maps to the media time inside its
segment by its share of the segment's span. Across a pause the timestamps jump by the time
that passed, as the stream's own did. ffmpeg is needed on the server (Debian: ``ffmpeg``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from castway.server.errors import FailedPrecondition, InvalidArgument, NotFound
from castway.server.recording.catalog import Catalog, Segment

FORMATS = {"ts": "mpegts", "mp4": "mp4"}
# The longest clip, and how long ffmpeg may take for it.
MAX_CLIP_S = 6 * 3600.0
TIMEOUT_S = 600.0
CHUNK = 256 * 1024


def make(
    catalog: Catalog, root: Path, route: str, start: float, end: float, fmt: str, tmp: Path
) -> Path:
    """Makes the clip in ``tmp``; returns its path. Refusals are ``ControlError``s."""
    fmt = fmt or "ts"
    if fmt not in FORMATS:
        raise InvalidArgument("format", f"{fmt!r} is not a clip format (ts, mp4)")
    if not end > start:
        raise InvalidArgument("to", "must be after `from`")
    if end - start > MAX_CLIP_S:
        raise InvalidArgument("to", f"a clip lasts at most {MAX_CLIP_S / 3600:g} h")
    segs = [s for s in catalog.between(route, start, end) if (root / s.path).is_file()]
    if not segs:
        raise NotFound(f"no recording of route {route!r} in that time range")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FailedPrecondition("exporting a clip needs ffmpeg on the server (apt install ffmpeg)")
    # Media time of a wall-clock time inside a segment: its share of the segment's span.
    def media(t: float, before: float, seg: Segment) -> float:
        span = max(seg.end - seg.start, 1e-6)
        return before + min(max(t - seg.start, 0.0) / span, 1.0) * seg.duration

    before = sum(s.duration for s in segs[:-1])
    media_from = media(start, 0.0, segs[0])
    media_to = media(end, before, segs[-1])
    if any(s.format == "mp4" for s in segs):
        # MP4 files are remuxed, not slices: ffmpeg's concat demuxer places each after the
        # one before by its duration.
        joined = tmp / "list.ffconcat"
        joined.write_text("ffconcat version 1.0\n" + "".join(
            f"file '{(root / s.path).as_posix()}'\n" for s in segs
        ))
        source = ["-f", "concat", "-safe", "0", "-i", str(joined)]
    else:
        # TS segments are exact slices of the stream: put end to end, they are the stream
        # (its timestamps run on across their boundaries).
        joined = tmp / "joined.ts"
        with open(joined, "wb") as dst:
            for seg in segs:
                with open(root / seg.path, "rb") as src:
                    shutil.copyfileobj(src, dst, CHUNK)
        source = ["-i", str(joined)]
    out = tmp / f"clip.{fmt}"
    argv = [
        ffmpeg, "-nostdin", "-v", "error", "-ss", f"{media_from:.3f}", *source,
        "-t", f"{max(media_to - media_from, 0.04):.3f}", "-map", "0", "-c", "copy",
        "-f", FORMATS[fmt], *(["-movflags", "+faststart"] if fmt == "mp4" else []), str(out),
    ]
    try:
        r = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FailedPrecondition(f"the clip took longer than {TIMEOUT_S:g} s") from None
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip()[-300:]
        raise FailedPrecondition(f"ffmpeg could not make the clip: {why}")
    return out
