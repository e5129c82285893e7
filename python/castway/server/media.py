"""The media root: the only directory tree ``castway serve`` reads or writes media files in.

In a served spec, ``file:///news/feed.ts`` is ``MEDIA/news/feed.ts``: the path is relative to the
media root whatever it looks like. ``..``, ``.`` and empty components are refused; every
directory on the way and the file itself are opened without following symbolic links (each step
``openat`` with ``O_NOFOLLOW`` beneath the last), so neither a link nor a rename race leads out.
The server opens the file itself and hands the data plane ``/proc/self/fd/N``, which names the
very inode it opened, never the path again.

Outputs are created (``O_CREAT|O_EXCL``, mode 0600). An existing file is written over only if
castway created it (the store remembers each output file it created by device and inode) or the
URI says ``overwrite=1``. Inputs must be regular files. A file that is one of the store's own
(a hard link to ``castway.db``, say) is never opened.

The notebook API and ``castway relay`` do not use this: run by the user on their own files, they
take absolute paths.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from castway.server.errors import InvalidArgument, PermissionDenied

FD_DIR = "/proc/self/fd"
Role = str  # "input" | "output"


class MediaError(Exception):
    """The media root itself is unusable (at start)."""


@dataclass(frozen=True)
class FileUri:
    """A ``file:`` URI of a served spec: a path relative to the media root and its keys."""

    parts: tuple[str, ...]
    looped: bool
    overwrite: bool

    @property
    def relative(self) -> str:
        return "/".join(self.parts)


@dataclass
class Opened:
    fd: int
    native_uri: str

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# The recordings directory, at the top of the media root: written by the recorders alone.
RECORDINGS_DIR = "recordings"


def is_file_uri(uri: str) -> bool:
    return uri[:7].lower() == "file://"


def _truthy(value: str, key: str, field: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(field, f"`{key}={value}` is not a boolean")


def parse_file_uri(uri: str, role: Role, field: str) -> FileUri:
    split = urlsplit(uri)
    if split.netloc not in ("", "localhost"):
        raise InvalidArgument(
            field,
            f"a file URI names a path in the media root, `file:///dir/name.ts` "
            f"(got host `{split.netloc}`)",
        )
    try:
        path = unquote_to_bytes(split.path).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgument(field, "the path is not valid UTF-8") from None
    parts = tuple(path.split("/")[1:]) if path.startswith("/") else tuple(path.split("/"))
    if not parts or parts == ("",):
        raise InvalidArgument(field, "names no file: `file:///dir/name.ts` is MEDIA/dir/name.ts")
    for p in parts:
        if p in ("", ".", ".."):
            raise InvalidArgument(
                field,
                f"`{path}` has a `{p or '//'}` component; paths stay inside the media root "
                "and are written without `.`, `..` or `//`",
            )
        if "\0" in p:
            raise InvalidArgument(field, "the path holds a NUL byte")
    looped = overwrite = False
    for key, value in parse_qsl(split.query, keep_blank_values=True, strict_parsing=False):
        k = key.lower()
        if k == "loop" and role == "input":
            looped = _truthy(value, key, field)
        elif k == "overwrite" and role == "output":
            overwrite = _truthy(value, key, field)
        else:
            known = "loop" if role == "input" else "overwrite"
            raise InvalidArgument(field, f"unknown key `{key}` for a file {role} (known: {known})")
    return FileUri(parts, looped, overwrite)


class MediaRoot:
    """File endpoints of served specs, resolved and opened beneath ``path``.

    ``store_files`` are the files no endpoint may ever reach (the store and its key file);
    ``known``/``remember`` tell whether castway created an output file (device, inode).
    """

    def __init__(
        self,
        path: Path,
        data_dir: Path,
        store_files: Callable[[], list[Path]],
        known: Callable[[str, int, int], bool],
        remember: Callable[[str, int, int], None],
    ) -> None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path = path.resolve(strict=True)
        except OSError as e:
            raise MediaError(f"cannot use the media dir {path}: {e.strerror}") from None
        if not self.path.is_dir():
            raise MediaError(f"the media dir {path} is not a directory")
        data = data_dir.resolve()
        if data == self.path or self.path in data.parents:
            raise MediaError(
                f"the media dir {path} holds the data dir {data_dir} (the store and its keys); "
                "give a --media-dir beside or beneath it, not above it"
            )
        self._store_files = store_files
        self._known = known
        self._remember = remember

    # Checks (at create and update: what can be known without creating anything)

    def check(self, uri: str, role: Role, field: str) -> str:
        """Checks a ``file:`` URI of a served spec; returns the same endpoint as an absolute
        URI the data plane's parser accepts (for its own checks; never opened by path)."""
        f = parse_file_uri(uri, role, field)
        if role == "output" and f.parts[0] == RECORDINGS_DIR:
            raise InvalidArgument(
                field,
                f"`{f.relative}` is in the recordings directory `{self.path / RECORDINGS_DIR}`, "
                "which only the recorders write: give a file output a path outside it",
            )
        parent = self._walk(f, field)
        try:
            name = f.parts[-1]
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                if role == "input":
                    raise InvalidArgument(
                        field, f"no file `{f.relative}` in the media root"
                    ) from None
                st = None
            if st is not None:
                self._check_existing(f, role, st, field)
        finally:
            os.close(parent)
        return self._absolute(f)

    def _absolute(self, f: FileUri) -> str:
        from urllib.parse import quote

        uri = "file://" + quote(str(self.path.joinpath(*f.parts)))
        return uri + "?loop=1" if f.looped else uri

    def _walk(self, f: FileUri, field: str) -> int:
        """An fd of the file's directory, reached without following a link."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except OSError as e:
            raise PermissionDenied(
                f"{field}: the media root cannot be opened: {e.strerror}"
            ) from None
        walked = []
        for p in f.parts[:-1]:
            walked.append(p)
            try:
                nfd = os.open(p, flags | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                raise InvalidArgument(
                    field, f"no directory `{'/'.join(walked)}` in the media root"
                ) from None
            except OSError as e:
                os.close(fd)
                what = "a symbolic link" if self._is_link(fd, p) else f"not usable ({e.strerror})"
                raise PermissionDenied(f"{field}: `{'/'.join(walked)}` is {what}") from None
            os.close(fd)
            fd = nfd
        return fd

    @staticmethod
    def _is_link(dir_fd: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def _check_existing(self, f: FileUri, role: Role, st: os.stat_result, field: str) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise PermissionDenied(f"{field}: `{f.relative}` is a symbolic link")
        if not stat.S_ISREG(st.st_mode):
            raise PermissionDenied(f"{field}: `{f.relative}` is not a regular file")
        if self._is_store_file(st):
            raise PermissionDenied(f"{field}: `{f.relative}` is one of castway's own store files")
        if role == "output":
            if st.st_nlink > 1:
                raise PermissionDenied(
                    f"{field}: `{f.relative}` has other hard links; castway does not write it"
                )
            if not f.overwrite and not self._known(f.relative, st.st_dev, st.st_ino):
                raise PermissionDenied(
                    f"{field}: `{f.relative}` exists and castway did not write it; "
                    "add `overwrite=1` to the URI to replace it"
                )

    def _is_store_file(self, st: os.stat_result) -> bool:
        for p in self._store_files():
            try:
                other = p.stat()
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
        return False

    # Opening (when a route starts): the same checks again, on the file itself

    def open(self, uri: str, role: Role, field: str) -> Opened:
        f = parse_file_uri(uri, role, field)
        parent = self._walk(f, field)
        name = f.parts[-1]
        try:
            if role == "input":
                fd = self._open_existing(parent, name, os.O_RDONLY, f, role, field)
            else:
                try:
                    fd = os.open(
                        name,
                        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                        0o600,
                        dir_fd=parent,
                    )
                    st = os.fstat(fd)
                    self._remember(f.relative, st.st_dev, st.st_ino)
                except FileExistsError:
                    fd = self._open_existing(parent, name, os.O_WRONLY, f, role, field)
        finally:
            os.close(parent)
        native = f"file://{FD_DIR}/{fd}"
        return Opened(fd, native + "?loop=1" if f.looped else native)

    def _open_existing(
        self, parent: int, name: str, mode: int, f: FileUri, role: Role, field: str
    ) -> int:
        try:
            # O_NONBLOCK: a FIFO put there must not block the open; it is refused just below.
            fd = os.open(
                name, mode | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent
            )
        except FileNotFoundError:
            raise InvalidArgument(field, f"no file `{f.relative}` in the media root") from None
        except OSError as e:
            if self._is_link(parent, name):
                raise PermissionDenied(f"{field}: `{f.relative}` is a symbolic link") from None
            raise PermissionDenied(f"{field}: `{f.relative}`: {e.strerror}") from None
        try:
            self._check_existing(f, role, os.fstat(fd), field)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd
