"""How a message names a setting: ``--loss fused`` on the command line (the default), ``loss="fused"``
inside :func:`fmclf.fit`, ``show`` and ``predict``, so each message is worded once, where it is written.

The wording is a context variable, so it holds in the thread (and asyncio task) that entered it: form a
message there, or read :func:`current` there and hand it on. Importing this module imports no torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import pathlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .kinds import ROWS

__all__ = ["COMMAND_LINE", "PYTHON", "Bare", "Echo", "Wording", "current", "flag", "option", "speaking"]

#: Where a run's lines go, one at a time: ``click.echo``, ``print``, a comparison's log of a job.
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Wording:
    """Who started a run, and so how its messages name settings and say to go on."""

    python: bool = False  #: True: fmclf.fit's keywords; False: the command line's flags
    #: the call that continues a run folder; None: `fmclf run --resume` (run.processes.resume_command)
    resume: Callable[[pathlib.Path | None], str] | None = None
    again: str = "Ctrl-C again"  #: how to stop at once after the first interrupt
    notice: Echo | None = None  #: says so from the signal handler; None: straight to stderr's fd


COMMAND_LINE = Wording()
PYTHON = Wording(python=True)

_CURRENT: contextvars.ContextVar[Wording] = contextvars.ContextVar("fmclf_wording", default=COMMAND_LINE)


def current() -> Wording:
    """The wording of the front end that is running now (the command line's unless one entered another)."""
    return _CURRENT.get()


@contextlib.contextmanager
def speaking(wording: Wording) -> Iterator[Wording]:
    """Word every message formed in this thread inside the ``with`` block as ``wording`` says."""
    token = _CURRENT.set(wording)
    try:
        yield wording
    finally:
        _CURRENT.reset(token)


class Bare(str):
    """A value shown as written in either wording: a placeholder or a number already formatted."""


_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # N, VALUE, NAME: the reader fills them in
_NO_VALUE = object()
#: Settings whose flag is singular (given once per component) where fit takes a list.
_PLURAL = {row.plural: row.name for row in ROWS if row.many}


def flag(setting: str, value: Any = _NO_VALUE, *, quoted: bool = False) -> str:
    """The setting ``setting`` (fit's keyword, such as ``batch_size``), with ``value`` when given:
    ``--batch-size 64`` or ``batch_size=64``. A bool is a switch (``--no-cuda-graphs`` or
    ``cuda_graphs=False``); ``quoted`` shows a value (a path) as repr() shows it, in both wordings."""
    python = current().python
    name = setting if python else "--" + _PLURAL.get(setting, setting).replace("_", "-")
    if value is _NO_VALUE:
        return name
    if isinstance(value, bool) and not python:
        return name if value else "--no-" + name[2:]
    shown = repr(str(value)) if quoted and not _bare(value) else (_python if python else _command_line)(value)
    return f"{name}={shown}" if python else f"{name} {shown}"


def option(target: str, name: str, value: Any = _NO_VALUE) -> str:
    """Component option ``name`` of ``target`` (``loss``, ``callback.early-stop``) set to ``value``:
    ``-o loss.weight=1,2`` or ``options={"loss": {"weight": [1, 2]}}`` (without a value, the option
    alone: ``-o dataset.resize`` or ``options={"dataset": {"resize": ...}}``)."""
    if current().python:
        return f'options={{"{target}": {{"{name}": {"..." if value is _NO_VALUE else _python(value)}}}}}'
    return f"-o {target}.{name}" + ("" if value is _NO_VALUE else f"={_command_line(value)}")


def _bare(value: Any) -> bool:
    return isinstance(value, Bare) or (isinstance(value, str) and _PLACEHOLDER.fullmatch(value) is not None)


def _command_line(value: Any) -> str:
    """``value`` as a flag's argument: booleans as TOML writes them, lists comma-separated."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_command_line(v) for v in value)
    return "..." if value is Ellipsis else str(value)


def _python(value: Any) -> str:
    """``value`` as Python source: strings in double quotes (as most style guides write them),
    placeholders bare."""
    if _bare(value) or value is Ellipsis:
        return "..." if value is Ellipsis else str(value)
    if isinstance(value, str):
        return f'"{value}"' if '"' not in value and "\\" not in value else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_python(v) for v in value) + "]"
    if isinstance(value, pathlib.PurePath):
        return _python(str(value))
    return repr(value)
