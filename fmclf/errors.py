"""The errors fmclf raises on purpose, each with a message for the person at the keyboard: what was wrong
and what to do about it, in one paragraph. The CLI prints it (never a traceback) and exits with ``exit_code``.
"""

from __future__ import annotations

import os
import sys


class FmclfError(Exception):
    """Base class: a problem fmclf explains instead of crashing on."""

    exit_code = 1

    def _render_traceback_(self) -> list[str]:
        """What IPython and Jupyter show for it: the paragraph, not a traceback through fmclf's
        internals, as the command line does. FMCLF_DEBUG=1 brings the traceback back."""
        if os.environ.get("FMCLF_DEBUG"):
            raise NotImplementedError  # IPython falls back to its usual traceback
        return [f"{type(self).__name__}: {self}"]


class UsageError(FmclfError):
    """Bad input caught before any work started (exit code 2, like Click's)."""

    exit_code = 2


class UnknownComponentError(UsageError):
    """A component name that no loaded plugin registered."""


class AmbiguousComponentError(UsageError):
    """A component name that two or more plugins registered."""


class OptionError(UsageError):
    """An unknown, missing or ill-typed component option."""


class DeviceError(UsageError):
    """A device that does not exist or is not available on this machine."""


class ConfigError(UsageError):
    """A run configuration file that cannot be read or does not fit."""


class PluginError(FmclfError):
    """A plugin failed to load or register (raised only in strict mode)."""


class DataError(FmclfError):
    """A data set that cannot be found, read or trusted."""


class ComponentError(FmclfError):
    """A component raised while it was built or used; names the component and its plugin."""


class DivergenceError(FmclfError):
    """Training produced a non-finite loss at ``epoch``, ``batch``."""

    def __init__(self, message: str, *, epoch: int | None = None, batch: int | None = None) -> None:
        super().__init__(message)
        self.epoch, self.batch = epoch, batch


class CheckpointError(FmclfError):
    """A checkpoint or run folder that cannot be read or written."""


class DistributedError(FmclfError):
    """The processes of a distributed run disagree, or one of them failed or went silent."""


class WriteError(FmclfError, OSError):
    """A file or folder fmclf (or a component, through :mod:`fmclf.atomic`) had to write could
    not be written: the message names the path and what to do. An ``OSError`` too, so code
    that catches the ``OSError`` of a failed write keeps working."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None,
                 exit_code: int = 1) -> None:
        super().__init__(message)
        self.errno, self.filename, self.exit_code = errno, filename, exit_code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Interrupted(FmclfError):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped the command; the message says what was kept."""

    exit_code = 130


class Stopped(KeyboardInterrupt):
    """Raised by fmclf's signal handler where a signal ends the command at once (outside
    training, or a second Ctrl-C during it). A ``KeyboardInterrupt``, so it passes every
    ``except Exception`` on its way up; the runner turns it into :class:`Interrupted`."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal = signal_name


def said(exc: FmclfError) -> str:
    """The paragraph a command ends with: ``Error: ...``, or an :class:`Interrupted`'s own sentence, capitalised."""
    text = str(exc)
    return text[:1].upper() + text[1:] if isinstance(exc, Interrupted) else f"Error: {text}"


def stopped(exc: BaseException) -> str:
    """The line a command ends with when a :class:`Stopped` (or a ``KeyboardInterrupt``) ended it outside a run."""
    name = getattr(exc, "signal", None)
    return f"Stopped by {name}." if name else "Interrupted."


def to_stderr(text: str) -> None:
    """Print ``text`` to stderr at once (flushed): warnings and ending errors go there, away from stdout's results."""
    print(text, file=sys.stderr, flush=True)
