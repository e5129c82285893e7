"""Clips: one file covering a time range of a route's recording (``ExportClip``,
``castway recording export``).

The segments overlapping the range come from the catalog. They are exact slices of the
route's output, so put end to end they are the stream itself, timestamps running on across
their boundaries; ffmpeg then cuts the range out of that with stream copy (no re-encoding),
from the keyframe at or before its start (``-ss`` before ``-i``), and remuxes it to ``mp4``
when asked (``-movflags +faststart``). A wall-clock time maps to the media time inside its
segment by its share of the segment's span, within a run of contiguous segments; across a
pause or a gap (the stream's timestamps jump there) each run is cut on its own and the cuts are
joined with timestamps running on. ffmpeg is needed on the server (Debian: ``ffmpeg``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from castway.server.errors import FailedPrecondition, InvalidArgument, NotFound
from castway.server.recording.catalog import MAX_LIST, Catalog, Segment

FORMATS = {"ts": "mpegts", "mp4": "mp4"}
# How long ffmpeg may take for a clip.
TIMEOUT_S = 600.0
CHUNK = 256 * 1024
# Segments further apart than this (wall clock) are not contiguous: a pause or a gap.
GAP_S = 1.0


def make(
    catalog: Catalog, root: Path, route: str, start: float, end: float, fmt: str, tmp: Path,
    max_s: float = 6 * 3600.0,
) -> Path:
    """Makes the clip in ``tmp``; returns its path. ``max_s``: the longest range it may cover
    (``limits.max_clip_s``). Refusals are ``ControlError``s."""
    fmt = fmt or "ts"
    if fmt not in FORMATS:
        raise InvalidArgument("format", f"{fmt!r} is not a clip format (ts, mp4)")
    if not end > start:
        raise InvalidArgument("to", "must be after `from`")
    if end - start > max_s:
        raise InvalidArgument(
            "to", f"a clip covers at most {max_s:g} s (limits.max_clip_s), not {end - start:g} s"
        )
    segs = catalog.between(route, start, end, limit=MAX_LIST + 1)
    if len(segs) > MAX_LIST:
        raise InvalidArgument(
            "to", f"the range covers more than {MAX_LIST} segments, the most a clip joins: "
            "export a shorter range"
        )
    segs = [s for s in segs if (root / s.path).is_file()]
    if not segs:
        raise NotFound(f"no recording of route {route!r} in that time range")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FailedPrecondition("exporting a clip needs ffmpeg on the server (apt install ffmpeg)")
    runs = _runs(segs)
    if len(runs) == 1:
        return _cut(ffmpeg, root, runs[0], start, end, fmt, tmp, tmp / f"clip.{fmt}")
    # Across a pause or a gap the stream's timestamps jump by the time that passed: each run
    # of contiguous segments is cut on its own (its media times map within it), and the cuts
    # are joined by ffmpeg's concat demuxer, timestamps running on.
    cuts = [
        _cut(ffmpeg, root, run, start, end, "ts", tmp, tmp / f"run{i}.ts")
        for i, run in enumerate(runs)
    ]
    listing = tmp / "runs.ffconcat"
    listing.write_text("ffconcat version 1.0\n" + "".join(
        f"file '{c.as_posix()}'\n" for c in cuts
    ))
    out = tmp / f"clip.{fmt}"
    _ffmpeg([
        ffmpeg, "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
        "-map", "0", "-c", "copy", "-f", FORMATS[fmt],
        *(["-movflags", "+faststart"] if fmt == "mp4" else []), str(out),
    ])
    return out


def _runs(segs: list[Segment]) -> list[list[Segment]]:
    """The segments in runs without a pause between them (one starts where the one before
    ended, within ``GAP_S``)."""
    runs: list[list[Segment]] = []
    for seg in segs:
        if runs and seg.start - runs[-1][-1].end <= GAP_S:
            runs[-1].append(seg)
        else:
            runs.append([seg])
    return runs


def _cut(
    ffmpeg: str, root: Path, segs: list[Segment], start: float, end: float, fmt: str,
    tmp: Path, out: Path,
) -> Path:
    """Cuts ``[start, end)`` out of a run of contiguous segments into ``out``."""
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
        joined = tmp / f"{out.stem}.ffconcat"
        joined.write_text("ffconcat version 1.0\n" + "".join(
            f"file '{(root / s.path).as_posix()}'\n" for s in segs
        ))
        source = ["-f", "concat", "-safe", "0", "-i", str(joined)]
    else:
        # TS segments are exact slices of the stream: put end to end, they are the stream
        # (its timestamps run on across their boundaries).
        joined = tmp / f"{out.stem}.joined.ts"
        with open(joined, "wb") as dst:
            for seg in segs:
                with open(root / seg.path, "rb") as src:
                    shutil.copyfileobj(src, dst, CHUNK)
        source = ["-i", str(joined)]
    _ffmpeg([
        ffmpeg, "-nostdin", "-v", "error", "-ss", f"{media_from:.3f}", *source,
        "-t", f"{max(media_to - media_from, 0.04):.3f}", "-map", "0", "-c", "copy",
        "-f", FORMATS[fmt], *(["-movflags", "+faststart"] if fmt == "mp4" else []), str(out),
    ])
    joined.unlink(missing_ok=True)
    return out


def _ffmpeg(argv: list[str]) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FailedPrecondition(f"the clip took longer than {TIMEOUT_S:g} s") from None
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip()[-300:]
        raise FailedPrecondition(f"ffmpeg could not make the clip: {why}")
