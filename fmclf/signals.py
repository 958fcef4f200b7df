"""SIGINT, SIGTERM and SIGHUP, at any moment: what stops, what is kept, how it ends.

One handler, in one of three modes:

- **at once** (outside the training loop): the signal raises :class:`~fmclf.errors.Stopped` where the
  program is; the runner says what the run folder keeps and how to continue, and the command exits 130.
- **training**: the first signal asks the loop to stop after the batch in flight and write a checkpoint;
  a second SIGINT stops at once; more SIGTERMs or SIGHUPs (a burst, a terminal closing) change nothing.
- **ending**: once a stop was raised, further signals are ignored, so that the clean-up runs to its end.

A file being written is finished first (:mod:`fmclf.atomic` holds signals back). The CLI installs the
handler first thing (:func:`install`); the runner and the plugin loader enter :func:`handled`, which installs
it where nobody did (Python, a notebook, tests). Importing this module is light.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .atomic import SIGNALS, signals_deferred
from .errors import Stopped
from .wording import Echo

if TYPE_CHECKING:
    from .train.engine import StopFlag


class _State:
    flag: StopFlag | None = None  #: set while training: signals ask the loop to stop
    echo: Echo | None = None
    ending = False  #: a stop was raised: ignore what follows
    warned = False
    again = "Ctrl-C again"  #: how to stop at once, as the one who started the run says it
    received = 0  #: signals handled since the process started (never reset: a caller compares counts)


_state = _State()


def say(text: str) -> None:
    """Write to stderr from a signal handler: ``print`` may be in the middle of writing to the same buffered
    stream (a progress bar), and re-entering it raises; a raw ``os.write`` cannot."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.write(sys.stderr.fileno(), text.encode("utf-8", "replace"))


def _handler(signum: int, frame) -> None:  # noqa: ARG001
    name, flag = signal.Signals(signum).name, _state.flag
    _state.received += 1
    if _state.ending:
        return
    if flag is None or (flag and signum == signal.SIGINT):  # not training, or Ctrl-C twice: stop where we are
        _state.ending = True
        raise Stopped(name)
    echo = _state.echo or say
    if not flag:
        flag.request(name)
        echo(f"\n{name}: stopping after this batch and writing a checkpoint ({_state.again} to stop at once, "
             f"losing this epoch's progress)\n")
    elif not _state.warned:
        _state.warned = True
        echo(f"\n{name}: already stopping after this batch (Ctrl-C stops at once)\n")


def received() -> int:
    """How many signals fmclf's handler has seen in this process (a caller compares counts to learn of a stop a
    run absorbed)."""
    return _state.received


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Make fmclf's handler the process's for SIGINT, SIGTERM and SIGHUP (the CLI's first step)."""
    if _main_thread():
        for s in SIGNALS:
            signal.signal(s, _handler)


def installed() -> bool:
    """Whether fmclf's handler is the process's now."""
    return all(signal.getsignal(s) is _handler for s in SIGNALS)


def training() -> bool:
    """Whether a signal now asks a training loop to stop after its batch (rather than stopping at once)."""
    return _state.flag is not None and installed()


def ending() -> None:
    """The command is ending (its error is being reported): from now on signals are ignored."""
    _state.ending = True


def ignore_from_now_on() -> None:
    """The process is about to exit: ignore the signals outright (while Python shuts down it puts back the default
    actions, and a Ctrl-C then would end the process as killed by SIGINT instead of with its exit code)."""
    if _main_thread():
        for s in SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(s, signal.SIG_IGN)


def import_torch() -> None:
    """Import torch with the stop signals held back until it is loaded: its C++ extensions run Python while they
    set up, and a :class:`~fmclf.errors.Stopped` raised in there cannot cross C++ (the process aborts)."""
    if "torch" not in sys.modules:
        with signals_deferred():
            import torch  # noqa: F401 - loaded here, where a signal waits for it


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """A piece of work during which signals stop it as documented: installs the handler where it is not (restoring
    the previous ones after), and starts afresh (not ending, not training)."""
    if not _main_thread():
        yield
        return
    previous = None if installed() else {s: signal.getsignal(s) for s in SIGNALS}
    saved = (_state.flag, _state.echo, _state.ending, _state.warned)
    _state.flag, _state.ending, _state.warned = None, False, False
    if previous is not None:
        install()
    try:
        yield
    finally:
        _state.flag, _state.echo = saved[0], saved[1]
        if previous is not None:
            for s, h in previous.items():
                if h is not None:
                    signal.signal(s, h)
            _state.ending, _state.warned = saved[2], saved[3]


@contextlib.contextmanager
def stop_on_signals(flag: StopFlag, echo: Echo | None = None, again: str = "Ctrl-C again") -> Iterator[None]:
    """Training: the first signal sets ``flag`` (the loop stops after the batch in flight and checkpoints); a
    second SIGINT stops at once. ``echo`` (default :func:`say`) says so, and that ``again`` stops at once."""
    with handled():
        if not _main_thread():
            yield
            return
        before = (_state.flag, _state.echo, _state.again)
        _state.flag, _state.echo, _state.again = flag, echo or say, again
        try:
            yield
        finally:
            _state.flag, _state.echo, _state.again = before
