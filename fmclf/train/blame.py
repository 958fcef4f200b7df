"""Whose fault it is when a component raises: one context manager for the engine.

Inside ``with blame(who, where):`` an :class:`~fmclf.errors.FmclfError` passes through untouched (it already says
what is wrong and whose it is); so does the user's own interrupt; any other exception, and any other BaseException
(a stray ``sys.exit(0)``, see :func:`component_fault`), becomes the :class:`~fmclf.errors.ComponentError` that names
``who`` (a component's record, or a plain description) and ``where``, with the original chained as its cause for
``FMCLF_DEBUG=1``. A class, not a generator, because the training loop enters one per call, on every batch.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from ..errors import ComponentError, DivergenceError, FmclfError, Stopped
from ..host.registry import ComponentRecord
from ..numbers import is_number
from ..wording import Bare, flag, option


class blame:
    """Blame ``who`` for what the block raises ``where`` (e.g. ``"on batch 3 of epoch 1"``)."""

    __slots__ = ("where", "who")

    def __init__(self, who: ComponentRecord | str, where: str) -> None:
        self.who, self.where = who, where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None or not component_fault(exc):
            return False  # nothing, an fmclf error, or the user's own interrupt: as it is
        if (text := torch_failed(exc)) is not None:  # torch itself cannot load (a memory limit): no component's fault
            raise FmclfError(text) from exc
        if (cause := self.diagnose(exc)) is not None:  # not the component's fault after all
            raise cause from exc
        if out_of_memory(exc):
            raise ComponentError(memory_message(describe(self.who), self.where, exc)) from exc
        raise ComponentError(self.message(exc)) from exc

    def diagnose(self, exc: BaseException) -> FmclfError | None:  # noqa: ARG002 - for subclasses
        """The real cause of ``exc`` when it lies outside the component (subclasses look), or None."""
        return None

    def message(self, exc: BaseException) -> str:
        """The paragraph the user reads."""
        return (f"{describe(self.who)} raised {type(exc).__name__} {self.where}: {exc}. This is a fault in that "
                f"component; report it to its authors, or choose another with `fmclf plugins`.")


_END = object()  # what next() returns after a data set's last batch


def guarded(batches: Any, who: ComponentRecord | str, where: str) -> Iterator[Any]:
    """Iterate a data set's batches, blaming the data set for what its iterator raises."""
    with blame(who, where):
        it = iter(batches)
    while True:
        with blame(who, where):
            item = next(it, _END)
        if item is _END:
            return
        yield item


def blamed(records: Mapping[str, ComponentRecord], kind: str) -> ComponentRecord | str:
    """Who is named for a fault of the run's ``kind`` component: its record in ``records``, or, for a component built
    without one (a Trainer used on its own, as the contract kit uses it), ``"the model"``, ``"the data set"`` ..."""
    return records.get(kind) or ("the data set" if kind == "dataset" else f"the {kind}")


def describe(who: ComponentRecord | str) -> str:
    """``who`` as messages name it: a component's record described, a plain description as it is."""
    return who if isinstance(who, str) else who.describe()


def component_fault(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside a component, is that component's fault. Any exception but an fmclf
    error is; so is any other BaseException (SystemExit from a stray ``sys.exit(0)``, GeneratorExit, a
    subclass of its own), except the user's own interrupt: under fmclf's handler a real signal raises
    :class:`~fmclf.errors.Stopped`, so only a KeyboardInterrupt where no fmclf handler is installed
    (a thread, a host that kept its own) is taken for the user's."""
    if isinstance(exc, (FmclfError, Stopped)):
        return False
    if isinstance(exc, KeyboardInterrupt):
        from ..signals import installed

        return installed()
    return True


def torch_failed(exc: BaseException) -> str | None:
    """The paragraph for ``exc`` when it is torch failing to load (its libraries cannot be mapped under a
    memory limit such as ``ulimit -v``, or a broken install), else None."""
    if not isinstance(exc, (ImportError, OSError)):  # what a failed import raises; anything else is no import
        return None
    frames = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(exc.__traceback__)]
    name = getattr(exc, "name", None) or ""
    if not (name in ("torch", "torch._C")  # not installed, or its core library would not load
            or any(f.endswith(os.path.join("torch", "__init__.py")) for f in frames)):  # torch's own import
        return None
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        unlimited = limit == resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):  # no such limits here (Windows)
        limit, unlimited = 0, True
    within = ("" if unlimited else
              f" This process may use at most {limit // 2**20} MiB of address space (`ulimit -v` {limit // 1024}), "
              f"and torch maps several GB of libraries when it loads: that limit is the likely cause.")
    first = " ".join(str(exc).split())[:300] or type(exc).__name__
    return (f"torch could not be imported ({type(exc).__name__}: {first}), and fmclf needs it for this command."
            f"{within} Raise or lift the limit (`ulimit -v unlimited`) or free memory, or reinstall torch if a file "
            f"is missing; `fmclf --help` and `fmclf plugins` work without it.")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (host or device): the settings' doing, not a bug."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def memory_message(who: str, where: str, exc: BaseException) -> str:
    """The paragraph for running out of memory: what asked for it, and the settings that decide it."""
    first = " ".join(str(exc).split())
    asked = ""
    if "tried to allocate" in first:
        asked = " (" + first[first.index("tried to allocate"):].split(".")[0].split(";")[0].rstrip(")") + ")"
    return (f"the memory ran out {where}, in {who}{asked}. The settings ask for more memory than this machine (or "
            f"device) has: use smaller ones (a smaller {flag('batch_size')}; for the data set, options such as "
            f"{option('dataset', 'resize')}) or another {flag('device')}.")


class blame_labels(blame):
    """Blame a failing loss, unless the labels it was given are out of range: then the data set."""

    __slots__ = ("classes", "dataset", "split", "y")

    def __init__(self, who: ComponentRecord | str, where: str, y, dataset: ComponentRecord | str, classes: int,
                 split: str = "training") -> None:
        super().__init__(who, where)
        self.y, self.dataset, self.classes, self.split = y, dataset, classes, split

    def diagnose(self, exc: BaseException) -> FmclfError | None:
        from .labels import out_of_range

        return out_of_range(self.y, self.dataset, self.split, self.classes)


class blame_update(blame):
    """Blame a failing updater, unless the step overflowed: then the learning rate."""

    __slots__ = ("lr",)

    def __init__(self, who: ComponentRecord | str, where: str, lr: float | None) -> None:
        super().__init__(who, where)
        self.lr = lr

    def diagnose(self, exc: BaseException) -> FmclfError | None:
        if not (isinstance(exc, OverflowError) or "overflow" in str(exc).lower()):
            return None
        lr = flag("lr", Bare(f"{self.lr:g}")) if is_number(self.lr) else "the learning rate"
        at = self.where.replace("while updating ", "")
        return DivergenceError(f"training diverged: {describe(self.who)} could not take a step {at} with {lr}: "
                               f"{type(exc).__name__}: {' '.join(str(exc).split())}. A step of that size overflows "
                               f"the weights' floating-point numbers; this is the learning rate's doing: use a much "
                               f"smaller {flag('lr')} (the textbook uses 0.1).")


class blame_gradients(blame):
    """Blame a failing ``backward()``: the gradients run back through the loss and
    the model, so both are named (the updater has not been called yet)."""

    __slots__ = ("records",)

    def __init__(self, records: Mapping[str, ComponentRecord], where: str) -> None:
        super().__init__("the loss and the model", where)
        self.records = records  # described only on failure: this runs every batch

    def message(self, exc: BaseException) -> str:
        names = " and ".join(self.records[k].describe() for k in ("loss", "model") if k in self.records)
        return (f"computing gradients raised {type(exc).__name__} {self.where}: {exc}. The backward pass runs "
                f"through {names or self.who}; one of them (a custom autograd function, say) is at fault. Report it "
                f"to its authors, or choose another with `fmclf plugins`.")
