"""Run-folder files written on a thread of their own, so that training does not wait for the disk.

Every epoch rewrites checkpoint.pt and metrics.jsonl atomically; their fsyncs took 2 to 60 ms an epoch,
as long as an epoch itself. The caller serialises (what is written is the state at that moment), and a
thread writes, in order, while the next epoch trains; at most one epoch's files wait, so on a slow disk
training waits rather than memory filling up. Every way a run ends goes through
:meth:`BackgroundWriter.close`, which waits for every write; a write that fails is raised at the next
write or at the close.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from .. import atomic


class BackgroundWriter:
    """Atomic writes done one at a time, in the order asked, on a daemon thread."""

    def __init__(self, depth: int = 3) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  #: raised once, in the training thread
        self._failed = False  #: until the failure is raised, nothing more is written: the last good files stay

    def write_bytes(self, path: str | os.PathLike, data: bytes) -> None:
        """Queue ``atomic.write_bytes(path, data)``."""
        self._submit(atomic.write_bytes, path, data)

    def write_text(self, path: str | os.PathLike, text: str) -> None:
        """Queue ``atomic.write_text(path, text)``."""
        self._submit(atomic.write_text, path, text)

    def then(self, fn: Callable[[], None]) -> None:
        """Queue ``fn()``, called once every write asked before it has succeeded (never after a failure)."""
        self._submit(fn)

    def _submit(self, write: Callable[..., None], *args: Any) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="fmclf-writer", daemon=True)
            self._thread.start()
        self._jobs.put((write, args))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if not self._failed:  # after a failure nothing more is written: the last good files stay
                    write, args = job
                    write(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread, raised there
                self._failed, self._error = True, exc
            finally:
                self._jobs.task_done()

    def flush(self) -> None:
        """Wait until every queued write is done; raise the first that failed."""
        if self._thread is not None:
            self._jobs.join()
        self._raise()

    def close(self, *, raise_error: bool = True) -> None:
        """Flush and stop the thread; ``raise_error=False`` keeps a write's failure from hiding the run's own."""
        try:
            if self._thread is not None:
                self._jobs.join()
                self._jobs.put(None)
                self._thread.join()
                self._thread = None
        finally:
            if raise_error:
                self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            if self._thread is not None:
                self._jobs.join()  # what was asked before the failure is skipped first, not written later
            error, self._error, self._failed = self._error, None, False
            raise error
