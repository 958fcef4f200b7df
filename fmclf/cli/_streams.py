"""Standard output that cannot stop a command: a closed pipe (``fmclf run | head -1``), a full disk
(``> /dev/full``) or a vanished terminal ends the printing, never the work.

:func:`guard` puts a thin layer under ``sys.stdout`` and ``sys.stderr``: the first failed write is recorded and
everything after it dropped, so a run keeps training. Standard output's :meth:`_Guarded.finish` then decides the
exit code: a reader that stopped reading is what ``head`` does on purpose, so the code stays; any other failure
lost output the user asked for, so it is said on stderr and the code becomes 1 (as coreutils do for
``> /dev/full``). Standard streams closed at start are opened on the null device, so that no file fmclf opens
takes their numbers.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import sys


class _Guarded(io.RawIOBase):
    """A raw stream over a file descriptor whose first failed write ends the writing, silently."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False

    def write(self, data) -> int:
        size = len(memoryview(data))
        waited = 0
        while self.error is None:
            try:
                return os.write(self.fd, data)
            except BlockingIOError:  # a non-blocking stream that is full: wait for it, a while
                if waited >= 30:
                    self.error = OSError(errno.EAGAIN, "the stream stayed full for 30 s")
                    break
                select.select([], [self.fd], [], 1.0)
                waited += 1
            except OSError as exc:
                self.error = exc
        return size  # dropped: what could not be written is lost, and the work goes on

    def close(self) -> None:  # the descriptor belongs to the process, not to this object
        with contextlib.suppress(Exception):
            self.flush()
        super().close()

    def finish(self, code: int | str | None) -> int | str | None:
        """The exit code to end with, given the command's ``code`` (SystemExit's)."""
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        error = self.error
        if error is None or error.errno == errno.EPIPE:
            return code
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"Error: could not write to standard output ({error.strerror or error}), so what fmclf printed "
                f"from then on was lost; the command itself ran to its end (a run's results are in its run "
                f"folder). Send the output somewhere it can be written, or to /dev/null.\n"
            )
            sys.stderr.flush()
        return code if code not in (0, None) else 1


def guard() -> _Guarded:
    """Guard ``sys.stdout`` and ``sys.stderr`` (see the module's docstring) for this process; returns
    standard output's guard."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # closed: the null device takes its number
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
    raw = {}
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if stream is None:  # closed at start-up: Python gave up on it; it is /dev/null now
            stream = getattr(sys, f"__{name}__", None)
        encoding = getattr(stream, "encoding", None) or "utf-8"
        errors = getattr(stream, "errors", None) or ("backslashreplace" if name == "stderr" else "strict")
        line = bool(getattr(stream, "line_buffering", name == "stderr"))
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
        raw[name] = _Guarded(fd)
        setattr(sys, name, io.TextIOWrapper(io.BufferedWriter(raw[name]), encoding=encoding, errors=errors,
                                            line_buffering=line))
    return raw["stdout"]
