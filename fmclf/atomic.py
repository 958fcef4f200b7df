"""Writing files so that a crash or Ctrl-C never leaves half of one behind.

Write to a temporary file in the same folder, fsync it, rename it over the
target (atomic on POSIX), then fsync the folder so the rename itself survives
a power cut. A reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import IO, Callable, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block exits normally."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_with(path: str | os.PathLike, writer: Callable[[IO], None]) -> None:
    """Atomically replace ``path`` with whatever ``writer(binary_file)`` writes
    (``torch.save``, ``figure.savefig`` ...)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)
