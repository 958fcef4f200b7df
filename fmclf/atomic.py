"""Writing files so that a crash, a full disk or Ctrl-C never leaves half of one behind.

Write a temporary file in the same folder, fsync it, rename it over the target, fsync the folder: a reader
sees the old file or the new one. SIGINT, SIGTERM and SIGHUP wait until the file is whole. A failed write
raises :class:`fmclf.errors.WriteError` naming the file and what to do, and leaves the old file and no
temporary. Also the one way fmclf opens its own files in a run folder (:func:`open_owned`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO

from .errors import UsageError, WriteError

#: The signals that end fmclf as documented (fmclf.signals), which a write holds back until it is done
#: (SIGKILL cannot be caught; SIGQUIT keeps its core dump).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

#: What to do about a failed write, by errno.
_ADVICE = {
    errno.ENOSPC: "The disk is full: free some space (or write elsewhere)",
    errno.EDQUOT: "The disk quota is used up: free some space (or write elsewhere)",
    errno.EROFS: "It is on a read-only file system: write elsewhere, or mount it read-write",
    errno.EACCES: "Permission denied: make the folder writable (chmod u+w), or write elsewhere",
    errno.EPERM: "The operation is not permitted there: make the folder writable, or write elsewhere",
    errno.EISDIR: "A folder has that name: choose a file name, or move the folder",
    errno.ENOTDIR: "A part of the path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "The name is too long for the file system: choose a shorter path",
    errno.EIO: "The disk (or network file system) reported an input/output error: check it, or write elsewhere",
    errno.ENOENT: "A folder on the path does not exist (or was removed meanwhile): choose an existing place",
    errno.EEXIST: "Something already has that name: choose another path",
    errno.EMFILE: "Too many files are open: close other programs, or raise the limit (ulimit -n)",
}


def advice(exc: BaseException, path: str | os.PathLike | None = None) -> str:  # noqa: ARG001 - path for later wording
    """What to do about the failed write ``exc``, as a sentence."""
    text = _ADVICE.get(getattr(exc, "errno", None))
    return f"{text}." if text else "Check that the folder exists, is writable and has space, or write elsewhere."


def write_error(path: str | os.PathLike, exc: OSError, *, exit_code: int = 1) -> WriteError:
    """The :class:`WriteError` for failing to write ``path``: what happened and what to do."""
    if isinstance(exc, WriteError):
        return exc
    why = exc.strerror or str(exc) or type(exc).__name__
    return WriteError(f"cannot write {str(path)!r}: {why}. {advice(exc, path)}", errno=exc.errno,
                      filename=str(path), exit_code=exit_code)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back for the block, then raise them again, in order, for the handlers
    that were there before. In the main thread only: elsewhere no handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):  # noqa: ARG001
        pending.append(signum)

    previous: dict[int, object] = {}
    try:
        for s in SIGNALS:
            if signal.getsignal(s) is not None:  # None: set outside Python, it cannot be put back, so leave it
                previous[s] = signal.signal(s, hold)
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)
        for s in pending:
            signal.raise_signal(s)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block exits normally.
    An ``OSError`` on the way becomes a :class:`~fmclf.errors.WriteError` naming ``path``."""
    path = pathlib.Path(path)
    with signals_deferred():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            mask = os.umask(0)  # read by setting it: mkstemp makes 0600, and the file gets the usual mode
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
            with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            # an OSError about this file (not one the block hit opening some other file)
            if isinstance(exc, OSError) and exc.filename in (None, tmp, str(path)):
                raise write_error(path, exc) from None
            raise
        with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the temporary file of an atomic write (a killed process can leave one behind)."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_with(path: str | os.PathLike, writer: Callable[[IO], None]) -> None:
    """Atomically replace ``path`` with whatever ``writer(binary_file)`` writes (``torch.save``, ``savefig`` ...)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def check_writable(folder: str | os.PathLike, *, what: str = "write there",
                   target: str | os.PathLike | None = None) -> None:
    """Refuse, before any work, a folder that cannot take a new file (``target``, named in the message) with a
    :class:`~fmclf.errors.WriteError`, exit code 2: a temporary file is made and removed. One that does not
    exist is fine if it can be made."""
    probe = folder = pathlib.Path(folder)
    while not probe.exists() and probe != probe.parent:  # the nearest folder that exists
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise WriteError(f"cannot {what}: {str(probe)!r} is a file, not a folder. Choose another path.",
                         errno=errno.ENOTDIR, filename=str(probe), exit_code=2)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fmclf-probe.", suffix=".tmp", dir=probe)
    except OSError as exc:
        raise write_error(target if target is not None else folder, exc, exit_code=2) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


class TooLarge(ValueError):
    """A file read with :func:`read_limited` holds more than its limit."""


class RefusedFile(UsageError):
    """A file fmclf owns (in a run or comparison folder) is a link, a FIFO, a device or a folder (exit 2).
    Not an ``OSError``, so no handler of a missing or unreadable file takes it for one."""

    def __init__(self, message: str, filename: str) -> None:
        super().__init__(message)
        self.filename = filename


#: What a path that is no regular file is, by ``stat.S_IFMT``, for :class:`RefusedFile`'s message.
_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def refused(path: str | os.PathLike, what: str) -> RefusedFile:
    """The :class:`RefusedFile` for ``path``, which is ``what`` (a symbolic link, a FIFO ...)."""
    return RefusedFile(f"{str(path)!r} is {what}, where fmclf keeps one of its own files; fmclf neither follows nor "
                       f"opens such a thing there, and changed nothing. Remove or move it (a run writes a plain file "
                       f"of that name), then try again.", str(path))


def open_owned(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """THE way fmclf opens a file of its own in a run or comparison folder: never through a symbolic link,
    without blocking (a FIFO cannot hang the reader), only a regular file. Returns the descriptor; raises
    :class:`RefusedFile` (exit 2) for anything else, ``OSError`` as ``os.open`` does."""
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link (EMLINK on FreeBSD)
            raise refused(path, "a symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO without a reader, a device; a folder
            mode = 0  # gone meanwhile: "not a regular file"
            with contextlib.suppress(OSError):
                mode = os.lstat(path).st_mode
            raise refused(path, kind_of(mode)) from None
        raise
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise refused(path, kind_of(kind))
    return fd


def kind_of(mode: int) -> str:
    """What a file of ``mode`` (``st_mode``) is, in words: "a symbolic link", "a FIFO (named pipe)" ..."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_append(path: str | os.PathLike, mode: str = "ab") -> IO:
    """A file of a run or comparison folder opened for appending (a job's log) by :func:`open_owned`, created when
    absent; its folder (a comparison's jobs/, which fmclf made) is no link either."""
    parent = os.path.dirname(os.fspath(path))
    if parent and os.path.islink(parent):
        raise refused(parent, "a symbolic link")
    fd = open_owned(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def read_tail(path: str | os.PathLike, limit: int) -> bytes:
    """The last ``limit`` bytes (at most) of a file of a run or comparison folder, opened by :func:`open_owned`."""
    with os.fdopen(open_owned(path), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - limit))
        return fh.read(limit)


def read_limited(path: str | os.PathLike, limit: int, *, owned: bool = False) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them: a file that holds more (``/dev/zero``) raises
    :class:`TooLarge` after reading ``limit + 1`` bytes. With ``owned`` (a file of a run or comparison folder)
    it is opened by :func:`open_owned`; a user's own file (``--config <(...)``) may be a link or a pipe."""
    with os.fdopen(open_owned(path), "rb") if owned else open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{str(path)!r} holds more than {limit:,} bytes")
    return data
