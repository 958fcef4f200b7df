"""One writer per run folder: an advisory ``flock`` on ``RUN_DIR/.lock``, which also records who holds it.
The kernel drops an ``flock`` when its process ends, however it ends: a ``.lock`` that names a holder but is
not locked was left by a killed process, and the next run takes it over (and says so). A clean exit empties
the file. Where ``fcntl`` is missing (Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..atomic import RefusedFile, advice, open_owned
from ..errors import UsageError, WriteError
from ..wording import Echo
from .folder import FILES, LOCK, remove_temporaries

NAME = LOCK

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunLocked(UsageError):
    """Another live process holds the run folder's lock."""


def _describe(holder: dict[str, Any]) -> str:
    host, started = holder.get("host"), holder.get("started")
    where = "" if host in (None, socket.gethostname()) else f" on {host}"
    return f"process {holder.get('pid', '?')}{where}{f', started {started}' if started else ''}"


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, FILES[LOCK].limit or 0).decode("utf-8", "replace").strip()
    if not text:
        return None
    with contextlib.suppress(ValueError):
        if isinstance(data := json.loads(text), dict):
            return data
    return {"pid": "?"}


class RunLock:
    """The lock of one run folder; :meth:`acquire` it before writing anything there."""

    def __init__(self, run_dir: pathlib.Path) -> None:
        self.run_dir = pathlib.Path(run_dir)
        self.path = self.run_dir / NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self, what: str = "write to it", fix: str = "choose another folder") -> str | None:
        """Take the lock, or raise :class:`RunLocked` naming its live holder (``fix``: the way out besides
        waiting). Returns a note when it took over a lock a killed process left (None otherwise). A lock file
        that cannot be written is a :class:`~fmclf.errors.WriteError` with exit code 2 (nothing done yet); one
        that is a link, FIFO or device a :class:`~fmclf.atomic.RefusedFile`."""
        if fcntl is None or self._fd is not None:
            return None
        try:
            fd = open_owned(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise self._cannot(exc, what) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stale = _read(fd)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "command": " ".join(["fmclf", *sys.argv[1:]])[:500]}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record, ensure_ascii=True) + "\n").encode("utf-8"))
        except BlockingIOError:  # only flock blocks: the descriptor is a regular file's
            holder: dict[str, Any] = {}
            with contextlib.suppress(OSError):  # who holds it only words the message: the folder is in use anyway
                holder = _read(fd) or {}
            os.close(fd)
            raise RunLocked(f"the run folder {str(self.run_dir)!r} is in use by {_describe(holder)} "
                            f"({holder.get('command', 'fmclf')}), so this command cannot {what}. A run folder has one "
                            f"writer at a time: wait for that run to end (or stop it with Ctrl-C), or {fix}.") from None
        except OSError as exc:
            os.close(fd)
            raise self._cannot(exc, what) from None
        self._fd = fd
        if stale:
            return (f"took over the lock of {self.run_dir}, left by {_describe(stale)}, which ended without "
                    f"releasing it (it was killed)")
        return None

    def noted(self, what: str, echo: Echo | None, fix: str = "choose another folder") -> None:
        """:meth:`acquire`, and say a taken-over lock's note through ``echo`` (None: say nothing)."""
        if (note := self.acquire(what, fix)) and echo is not None:
            echo(f"Note: {note}.")

    def claim(self, what: str, echo: Echo | None) -> None:
        """Take the folder to write a run in it: :meth:`noted`, then remove the temporaries a killed writer
        left, now that the folder is ours (a run started, resumed or trained in a group all take it so)."""
        self.noted(what, echo)
        remove_temporaries(self.run_dir)

    def _cannot(self, exc: OSError, what: str) -> WriteError:
        return WriteError(f"cannot write to the run folder {str(self.run_dir)!r} (its lock file {self.path.name}: "
                          f"{exc.strerror or exc}), so this command cannot {what}. {advice(exc, self.path)}",
                          errno=exc.errno, filename=str(self.path), exit_code=2)

    def release(self, *, remove: bool = False) -> None:
        """Give the lock up; ``remove`` deletes the lock file too (a folder left empty goes then)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if remove:
                self.path.unlink()
            else:
                os.ftruncate(fd, 0)  # an empty lock file: released cleanly, nothing to take over
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def writing(run_dir: pathlib.Path, what: str, fix: str = "choose another folder",
            echo: Echo | None = None) -> Iterator[RunLock]:
    """Hold the lock of ``run_dir`` for the block (:meth:`RunLock.noted`); ``echo`` prints a stale lock's note."""
    lock = RunLock(run_dir)
    lock.noted(what, echo, fix)
    try:
        yield lock
    finally:
        lock.release()


def holder(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """Who is writing ``run_dir`` now (``pid``, ``host``, ``started``, ``command``), or None when nobody is."""
    if fcntl is None:
        return None
    try:
        fd = open_owned(pathlib.Path(run_dir) / NAME)
    except (OSError, RefusedFile):  # absent, or a link (never followed) or FIFO: nobody holds that
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it (closing this descriptor below drops the shared lock again)
    except BlockingIOError:
        return _read(fd) or {"pid": "?"}
    finally:
        os.close(fd)
