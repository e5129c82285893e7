"""Clips: one file covering a time range of a route's recording (``ExportClip``,
``castway recording export``).

The segments overlapping the range come from the catalog. They are exact slices of the
route's output, so put end to end they are the stream itself, timestamps running on across
their boundaries. A clip starts at the last keyframe at or before its ``from`` (the keyframe
times each segment keeps in the catalog), so it covers the whole range asked for, its first
frame is a keyframe, and it starts at most one GOP earlier than ``from``; ffmpeg copies from
there (no re-encoding, no seeking: an output ``-ss`` just before that keyframe's time, so
the copy starts at it) up to ``to`` and remuxes to ``mp4`` when asked (``-movflags
+faststart``). A wall-clock time maps to
the media time inside its segment by its share of the segment's span, within a run of
contiguous segments; across a pause, a gap or a restart of the stream's timestamps (its
sender restarted) each run is cut on its own and the cuts are joined with timestamps running
on. TS segments are fed to ffmpeg through a pipe, each opened without following a link; MP4
segments are handed to ffmpeg as such descriptors (``/proc/self/fd/N``), so the file read is
the file checked: the only files a clip writes are the clip itself and its runs' cuts, in
``tmp`` (the recordings volume's own ``.castway-clips`` directory), and a clip that could take
the volume below its free-space floor is refused. A segment of the range missing on disk is an
error naming it, never a silent hole. ffmpeg is needed on the server (Debian: ``ffmpeg``).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from castway.server.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from castway.server.recording.catalog import MAX_LIST, Catalog, Segment
from castway.server.recording.repair import WRAP, first_pts
from castway.server.recording.retention import free_bytes, open_dir

FORMATS = {"ts": "mpegts", "mp4": "mp4"}
# How long ffmpeg may take for a clip.
TIMEOUT_S = 600.0
CHUNK = 256 * 1024
# Bytes of a TS segment read for its first timestamp (a whole number of packets; the first
# PES follows the PAT and PMT a segment starts with).
PROBE = 188 * 128
# Segments further apart than this (wall clock) are not contiguous: a pause or a gap. Within
# a run, a segment whose first timestamp is further than this from where the one before ended
# (media time) starts a new run: the stream's timestamps restarted.
GAP_S = 1.0


class Job:
    """One clip being made: ``cancel()`` (from any thread) kills its ffmpeg and makes
    ``make`` raise ``Aborted``; the caller frees the clip's place and its files only after
    ``make`` has returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def _start(
        self, argv: list[str], stdin: int, stderr: IO[bytes], pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.cancelled:
                raise Aborted("the clip was cancelled")
            self._proc = subprocess.Popen(
                argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr, pass_fds=pass_fds
            )
            return self._proc


def make(
    catalog: Catalog, root: Path, route: str, start: float, end: float, fmt: str, tmp: Path,
    max_s: float = 6 * 3600.0, floor: int = 0, job: Job | None = None,
) -> Path:
    """Makes the clip in ``tmp``; returns its path. ``max_s``: the longest range it may cover
    (``limits.max_clip_s``); ``floor``: the free space the volume of ``tmp`` must keep (the
    recordings' free-space floor); ``job``: cancels it from another thread. Refusals are
    ``ControlError``s."""
    job = job or Job()
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
    if not segs:
        raise NotFound(f"no recording of route {route!r} in that time range")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FailedPrecondition("exporting a clip needs ffmpeg on the server (apt install ffmpeg)")
    firsts = [_check(root, s) for s in segs]
    runs = _runs(segs, firsts)
    # The clip is at most the segments' bytes (and its runs' cuts as much again).
    need = sum(s.bytes for s in segs) * (2 if len(runs) > 1 else 1)
    free = free_bytes(tmp)
    if free - need < floor:
        raise ResourceExhausted(
            f"the clip needs up to {need} bytes and the recordings volume has {free} free, "
            f"{floor} of which must stay free (the recording policies' min_free_bytes): "
            "export a shorter range or make room"
        )
    if len(runs) == 1:
        return _cut(ffmpeg, root, runs[0], start, end, fmt, tmp / f"clip.{fmt}", job)
    # Across a pause, a gap or a restart the stream's timestamps jump: each run of contiguous
    # segments is cut on its own (its media times map within it), and the cuts are joined by
    # ffmpeg's concat demuxer, timestamps running on.
    cuts = [
        _cut(ffmpeg, root, run, start, end, "ts", tmp / f"run{i}.ts", job)
        for i, run in enumerate(runs)
    ]
    listing = tmp / "runs.ffconcat"
    listing.write_text("ffconcat version 1.0\n" + "".join(
        f"file '{c.as_posix()}'\n" for c in cuts
    ))
    out = tmp / f"clip.{fmt}"
    _ffmpeg(job, [
        ffmpeg, "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
        "-map", "0", "-c", "copy", "-f", FORMATS[fmt],
        *(["-movflags", "+faststart"] if fmt == "mp4" else []), str(out),
    ])
    for c in cuts:
        c.unlink(missing_ok=True)
    return out


def _open(root: Path, seg: Segment) -> int:
    """A descriptor of ``seg``'s file, opened without following a link (``open_dir``, then
    ``O_NOFOLLOW``); a segment missing on disk (or reached through a link) is an error naming
    it."""
    rel_dir, name = posixpath.split(seg.path)
    try:
        dir_fd = open_dir(root, rel_dir)
        try:
            # Without blocking: a FIFO swapped in would hold the open until a writer came.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except FileNotFoundError:
        why = "is missing on disk"
    except OSError as e:
        why = f"cannot be read without following a link ({e.strerror})"
    else:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
        why = "is not a regular file"
    raise FailedPrecondition(
        f"segment {seg.path} of the range {why}: the clip would have a hole there; export "
        "the ranges before and after it"
    )


def _check(root: Path, seg: Segment) -> int | None:
    """Checks that ``seg`` is on disk; returns the first PES timestamp of a TS segment
    (``None`` for MP4, or none found)."""
    fd = _open(root, seg)
    with os.fdopen(fd, "rb") as f:
        return None if seg.format == "mp4" else first_pts(f.read(PROBE))


def _runs(segs: list[Segment], firsts: list[int | None]) -> list[list[Segment]]:
    """The segments in runs without a pause between them (one starts where the one before
    ended, within ``GAP_S``, wall clock and media time: a TS segment's first timestamp where
    the one before ended)."""
    runs: list[list[Segment]] = []
    prev: int | None = None
    for seg, first in zip(segs, firsts, strict=True):
        restart = False
        if runs and first is not None and prev is not None:
            expected = (prev + round(runs[-1][-1].duration * 90_000)) % WRAP
            off = (first - expected) % WRAP
            restart = min(off, WRAP - off) > GAP_S * 90_000
        if runs and seg.start - runs[-1][-1].end <= GAP_S and not restart:
            runs[-1].append(seg)
        else:
            runs.append([seg])
        prev = first
    return runs


def _media(seg: Segment, at: float) -> float:
    """The media time (from its first keyframe) of wall-clock time ``at`` inside ``seg``: its
    share of the segment's span."""
    span = max(seg.end - seg.start, 1e-6)
    return min(max(at - seg.start, 0.0) / span, 1.0) * seg.duration


def _keyframe_before(seg: Segment, at: float) -> float:
    """Where a copy from the last keyframe of ``seg`` at or before media time ``at`` starts
    (ffmpeg's output ``-ss``; 0: from the segment's start). A stream copy starts at the first
    keyframe whose timestamp is at or after ``-ss``, counted from ffmpeg's own zero: the
    earliest first timestamp of any stream, at or before the segment's first keyframe (where
    the keyframe times count from). So ``-ss`` a little before the keyframe's time (10 ms,
    at most half-way back to the keyframe before) starts the copy at that keyframe, and the
    other streams from about there."""
    keys = sorted(k for k in seg.keyframes if k <= at + 1e-3)
    if len(keys) < 2:
        return 0.0
    return keys[-1] - min(0.01, (keys[-1] - keys[-2]) / 2)


def _cut(
    ffmpeg: str, root: Path, segs: list[Segment], start: float, end: float, fmt: str,
    out: Path, job: Job,
) -> Path:
    """Copies a run of contiguous segments from the last keyframe at or before ``start``
    (the segment's keyframe times; the run's first segment's start when it begins after
    ``start``) up to ``end`` into ``out``."""
    skip = _keyframe_before(segs[0], _media(segs[0], start))
    # Media time of a wall-clock time inside the last segment: its share of the span.
    media_to = sum(s.duration for s in segs[:-1]) + _media(segs[-1], end)
    limit = [*(["-ss", f"{skip:.3f}"] if skip else []),
             "-t", f"{max(media_to - skip, 0.04):.3f}"]
    tail = ["-map", "0", "-c", "copy", "-f", FORMATS[fmt],
            *(["-movflags", "+faststart"] if fmt == "mp4" else []), str(out)]
    if any(s.format == "mp4" for s in segs):
        # MP4 files are remuxed, not slices: ffmpeg's concat demuxer places each after the
        # one before by its duration. It needs files it can seek in, so it is given each
        # segment as the descriptor opened here without following a link (`_open`): ffmpeg
        # inherits them and opens `/proc/self/fd/N`, the file checked, whatever the path
        # names by then.
        with contextlib.ExitStack() as fds:
            opened = []
            for s in segs:
                fd = _open(root, s)
                fds.callback(os.close, fd)
                opened.append(fd)
            listing = out.with_suffix(".ffconcat")
            listing.write_text("ffconcat version 1.0\n" + "".join(
                f"file '/proc/self/fd/{fd}'\n" for fd in opened
            ))
            _ffmpeg(job, [ffmpeg, "-nostdin", "-v", "error", "-f", "concat", "-safe", "0",
                          "-i", str(listing), *limit, *tail], pass_fds=tuple(opened))
            listing.unlink(missing_ok=True)
    else:
        # TS segments are exact slices of the stream: fed end to end through a pipe, they are
        # the stream (its timestamps run on across their boundaries).
        _ffmpeg(job, [ffmpeg, "-v", "error", "-f", "mpegts", "-i", "pipe:0", *limit, *tail],
                feed=lambda: _segments_bytes(root, segs))
    return out


def _segments_bytes(root: Path, segs: list[Segment]) -> Iterator[bytes]:
    for seg in segs:
        with os.fdopen(_open(root, seg), "rb") as f:
            while data := f.read(CHUNK):
                yield data


def _ffmpeg(
    job: Job, argv: list[str], feed: Callable[[], Iterator[bytes]] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> None:
    """Runs ffmpeg (as ``job``'s, so that a cancel kills it), writing what ``feed`` yields to
    its standard input from a thread of its own; ``pass_fds``: descriptors it inherits."""
    failed: list[BaseException] = []
    with tempfile.TemporaryFile() as err:
        proc = job._start(argv, subprocess.PIPE if feed else subprocess.DEVNULL, err, pass_fds)
        feeder = None
        if feed is not None:
            stdin = proc.stdin
            assert stdin is not None

            def pump() -> None:
                try:
                    for data in feed():
                        stdin.write(data)
                except (BrokenPipeError, OSError):
                    pass  # ffmpeg has what it needs (`-t`), or was killed
                except BaseException as e:
                    failed.append(e)
                    proc.kill()
                finally:
                    with contextlib.suppress(OSError):
                        stdin.close()

            feeder = threading.Thread(target=pump, name="castway-clip-feed", daemon=True)
            feeder.start()
        try:
            code = proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise FailedPrecondition(f"the clip took longer than {TIMEOUT_S:g} s") from None
        finally:
            if feeder is not None:
                feeder.join(TIMEOUT_S)
        if job.cancelled:
            raise Aborted("the clip was cancelled")
        if failed:
            raise failed[0]
        if code != 0:
            err.seek(0)
            why = err.read().decode(errors="replace").strip()[-300:]
            raise FailedPrecondition(f"ffmpeg could not make the clip: {why}")
