"""Retention: deletes segments by age, by bytes per route and by free space on the recordings
volume, oldest first, never a segment being written; removes the directories it leaves empty;
notices files removed by hand. Each pass does bounded work (``MAX_DELETES`` deletions and
``CHECK_PAGE`` to ``CHECK_MAX`` existence checks, newest segments first) and says what it
did.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from castway.server.recording.catalog import MAX_SEGMENT_S, Catalog, Segment
from castway.server.specs import Recording

# Deletions per pass, and catalog rows checked for a file removed by hand per pass: at least
# CHECK_PAGE, more in a large catalog so that a sweep of every row takes at most
# CHECK_SWEEP passes, but never more than CHECK_MAX.
MAX_DELETES = 200
CHECK_PAGE = 500
CHECK_SWEEP = 30
CHECK_MAX = 20_000
# Paths kept as reported undeletable (reported again once they are forgotten).
MAX_FAILING = 10_000

log = logging.getLogger("castway.recording")


@dataclass
class Pass:
    """What one pass did: the paths deleted, by reason (``age``, ``bytes``, ``free_space``,
    ``missing``, ``outside``)."""

    deleted: dict[str, list[str]] = field(default_factory=dict)
    # The paths it could not delete (the file stays, and its row).
    failed: list[str] = field(default_factory=list)

    def add(self, reason: str, path: str) -> None:
        self.deleted.setdefault(reason, []).append(path)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.deleted.values())


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def volume_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def open_dir(root: Path, rel_dir: str) -> int:
    """A descriptor of the directory ``root / rel_dir``, each component opened relative to its
    parent with ``O_NOFOLLOW``: a component that is a symbolic link (or not a directory) raises
    ``OSError`` (``ELOOP``, ``ENOTDIR``), so a link swapped in after a check is never followed.
    Close it with ``os.close``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in rel_dir.split("/") if p]:
            if part in (".", ".."):
                raise OSError(errno.EINVAL, f"`{rel_dir}` leaves the recordings directory")
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


class Retention:
    """Prunes ``root`` (the recordings directory) by the routes' ``policies``."""

    def __init__(
        self,
        root: Path,
        catalog: Catalog,
        report: Callable[[str, str, str], None],
        free: Callable[[Path], int] = free_bytes,
        volume: Callable[[Path], int] = volume_bytes,
        report_error: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``report(route, path, reason)`` is called for each segment deleted or found gone;
        ``report_error(route, path, error)`` once for a segment that cannot be deleted (again
        after it could be)."""
        self.root, self.catalog, self.report, self.free = root, catalog, report, free
        self.volume = volume
        self.report_error = report_error
        # Deletions that failed (the file stays), a running total; the paths reported failing.
        self.failures = 0
        self._failing: set[str] = set()
        # Where the existence checks go on from: the (start, path) of the last row checked.
        self._cursor: tuple[float, str] | None = None

    def run(self, policies: Mapping[str, Recording], now: float,
            writing: frozenset[str] = frozenset(),
            recording: frozenset[str] | None = None) -> Pass:
        """One pass. ``writing``: paths being written (never deleted, whatever the catalog
        says). ``recording``: the routes recording now; only their ``min_free_bytes`` counts
        (``None``: every route's)."""
        done = Pass()
        budget = [MAX_DELETES]

        def delete(seg: Segment, reason: str) -> bool:
            if budget[0] <= 0 or seg.open or seg.path in writing:
                return False
            budget[0] -= 1
            return self._delete(seg, reason, done)

        for route, policy in sorted(policies.items()):
            if policy.max_age_s is not None:
                for seg in self.catalog.oldest(budget[0], route, before=now - policy.max_age_s):
                    if seg.end <= now - policy.max_age_s:
                        delete(seg, "age")
        sizes = self.catalog.route_bytes()
        for route, policy in sorted(policies.items()):
            if policy.max_bytes is None:
                continue
            over = sizes.get(route, 0) - policy.max_bytes
            for seg in self.catalog.oldest(budget[0], route) if over > 0 else []:
                if over <= 0:
                    break
                if delete(seg, "bytes"):
                    over -= seg.bytes
        floor = self.floor(policies, recording)
        if floor and self.free(self.root) < floor:
            for seg in self.catalog.oldest(budget[0]):
                if self.free(self.root) >= floor:
                    break
                delete(seg, "free_space")
        self._check_missing(done, now, writing)
        return done

    def floor(self, policies: Mapping[str, Recording],
              recording: frozenset[str] | None = None) -> int:
        """The free-space floor: the largest ``min_free_bytes`` of the routes recording, but
        none larger than the volume (which no deletion could meet: it would empty the whole
        recordings directory)."""
        if not self.root.exists():
            return 0
        size = self.volume(self.root)
        return max(
            (p.min_free_bytes or 0 for r, p in policies.items()
             if (recording is None or r in recording) and (p.min_free_bytes or 0) <= size),
            default=0,
        )

    def _delete(self, seg: Segment, reason: str, done: Pass) -> bool:
        """Deletes ``seg`` (file and row); returns whether it is gone (False: it could not be
        deleted, reported; a caller goes on to the next)."""
        # Relative to its directory, opened without following a link (`open_dir`): a link
        # swapped in after any check is never followed.
        rel_dir, name = posixpath.split(seg.path)
        try:
            dir_fd = open_dir(self.root, rel_dir)
        except FileNotFoundError:
            dir_fd = None
            reason = "missing"
        except OSError:
            dir_fd = -1
        if dir_fd == -1 or (dir_fd is not None and is_link_at(dir_fd, name)):
            # Reached through a link: leaves the catalog, the file it points to stays.
            if dir_fd is not None and dir_fd >= 0:
                os.close(dir_fd)
            self.catalog.remove([seg.path])
            done.add("outside", seg.path)
            self.report(seg.route, seg.path, "outside")
            return True
        if dir_fd is not None:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                reason = "missing"
            except OSError as e:
                self._failed(seg, reason, e, done)
                return False
            finally:
                os.close(dir_fd)
        self._failing.discard(seg.path)
        self.catalog.remove([seg.path])
        self._prune_dirs(rel_dir)
        done.add(reason, seg.path)
        self.report(seg.route, seg.path, reason)
        return True

    def _failed(self, seg: Segment, reason: str, e: OSError, done: Pass) -> None:
        """A deletion that failed: counted, logged and reported (once a path until it goes);
        the file and its row stay, and its bytes are not freed."""
        self.failures += 1
        done.failed.append(seg.path)
        if seg.path in self._failing:
            return
        if len(self._failing) >= MAX_FAILING:
            self._failing.clear()
        self._failing.add(seg.path)
        error = f"retention ({reason}) cannot delete `{seg.path}`: {e.strerror or e}"
        log.warning("recording of route %s: %s", seg.route, error)
        if self.report_error is not None:
            self.report_error(seg.route, seg.path, error)

    def _prune_dirs(self, rel_dir: str) -> None:
        """Removes ``rel_dir`` and its parents under the root while they are empty, each
        relative to its parent (a link is not a directory: ``rmdir`` refuses it)."""
        parts = [p for p in rel_dir.split("/") if p]
        while parts:
            try:
                parent = open_dir(self.root, "/".join(parts[:-1]))
            except OSError:
                return
            try:
                os.rmdir(parts[-1], dir_fd=parent)
            except OSError:
                return
            finally:
                os.close(parent)
            parts.pop()

    def _on_disk(self, path: str) -> bool:
        """Whether the segment ``path`` is on disk, whole (its final name) or not (``.part``)."""
        return any(os.path.lexists(self.root / p) for p in (path, path + ".part"))

    def _check_missing(self, done: Pass, now: float, writing: frozenset[str]) -> None:
        page = min(max(CHECK_PAGE, -(-self.catalog.count() // CHECK_SWEEP)), CHECK_MAX)
        rows = self.catalog.newest(self._cursor, page)
        self._cursor = (rows[-1].start, rows[-1].path) if len(rows) == page else None
        # A row still open that no route writes and older than any segment can last lost its
        # close (a failed rename, a crash): it goes when neither its file nor its `.part` is
        # there (crash repair catalogs a `.part` again, `reconcile` closes it from its file).
        stale = [s for s in rows
                 if s.open and s.path not in writing and s.start < now - MAX_SEGMENT_S
                 and not self._on_disk(s.path)]
        gone = stale + [s for s in rows if not s.open and not (self.root / s.path).exists()]
        if gone:
            self.catalog.remove([s.path for s in gone])
        for s in gone:
            done.add("missing", s.path)
            self.report(s.route, s.path, "missing")


def deleted_json(path: str, reason: str) -> str:
    return json.dumps({"path": path, "reason": reason}, separators=(",", ":"))
