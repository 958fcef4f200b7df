"""SIGINT and SIGTERM during training: finish the batch in flight, checkpoint, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator

from ..train.engine import StopFlag

Echo = Callable[[str], None]


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, echo: Echo | None = None, again: str = "Ctrl-C again") -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the batch in flight; a second SIGINT stops at once.
    ``echo`` (default: stderr, written safely from a signal handler) says so, and that ``again`` stops at once."""
    echo = echo or say
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.request(signal.Signals(signum).name)
        echo(f"\n{flag.signal}: stopping after this batch and writing a checkpoint ({again} to stop at once, "
             f"losing this epoch's progress)\n")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def say(text: str) -> None:
    """Write to stderr from a signal handler. ``print`` could be in the middle of
    writing to the same buffered stream (a progress bar is, all the time), and
    re-entering it raises; a raw ``os.write`` cannot."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(sys.stderr.fileno(), text.encode("utf-8", "replace"))
