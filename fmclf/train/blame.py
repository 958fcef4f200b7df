"""Whose fault it is when a component raises: one context manager for the engine.

Inside ``with blame(who, where):`` an :class:`~fmclf.errors.FmclfError` passes
through untouched (it already says what is wrong and whose it is: a
DataError, a lost peer); any other exception becomes the
:class:`~fmclf.errors.ComponentError` that names ``who`` (a component's
record, or a plain description when there is none) and ``where``, with the
original chained as its cause for ``FMCLF_DEBUG=1``. A class, not a
generator, because the training loop enters one per call, on every batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from ..errors import ComponentError, FmclfError
from ..host.registry import ComponentRecord


class blame:
    """Blame ``who`` for what the block raises ``where`` (e.g. ``"on batch 3 of epoch 1"``)."""

    __slots__ = ("where", "who")

    def __init__(self, who: ComponentRecord | str, where: str) -> None:
        self.who = who
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None or isinstance(exc, FmclfError) or not isinstance(exc, Exception):
            return False  # nothing, an fmclf error, or KeyboardInterrupt/SystemExit: as they are
        raise ComponentError(self.message(exc)) from exc

    def message(self, exc: BaseException) -> str:
        """The paragraph the user reads."""
        who = self.who if isinstance(self.who, str) else self.who.describe()
        return (
            f"{who} raised {type(exc).__name__} {self.where}: {exc}. This is a fault in that component; "
            f"report it to its authors, or choose another with `fmclf plugins`."
        )


class blame_gradients(blame):
    """Blame a failing ``backward()``: the gradients run back through the loss and
    the model, so both are named (the updater has not been called yet)."""

    __slots__ = ("records",)

    def __init__(self, records: Mapping[str, ComponentRecord], where: str) -> None:
        super().__init__("the loss and the model", where)
        self.records = records  # described only on failure: this runs every batch

    def message(self, exc: BaseException) -> str:
        names = " and ".join(self.records[k].describe() for k in ("loss", "model") if k in self.records)
        return (
            f"computing gradients raised {type(exc).__name__} {self.where}: {exc}. The backward pass runs through "
            f"{names or self.who}; one of them (a custom autograd function, say) is at fault. Report it to its "
            f"authors, or choose another with `fmclf plugins`."
        )
