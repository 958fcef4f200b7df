"""A factory's cheap checks, run before any work: before torch is imported, before the data is read.

Types and bounds (``Annotated[float, fmclf.Range(0, 1)]``) are checked by the option parser. What
they cannot say (two options that exclude each other, a list as long as the data set has classes)
a plugin says in a check function, attached to its factory with :func:`checks`::

    def fused(*, weight: list[float] | None = None, num_classes: int | None = None): ...

    @fmclf.checks(fused)
    def _check_fused(*, weight=None, num_classes=None):
        if weight is not None and num_classes is not None and len(weight) != num_classes:
            raise fmclf.OptionError(f"option weight has {len(weight)} entries for {num_classes} classes")

``fmclf run`` calls it with the component's options (those it names, or all with ``**kwargs``)
and the core parameters of its kind that are known before any work (those it names): a data
set's ``batch_size`` and ``seed``, an updater's ``lr`` and ``epochs``, and ``num_classes``, ``num_inputs`` and
``input_shape`` when the data set's own check returned them. That is how a loss can check a
per-class option before the data is read: a data-set check may return what the data set will
have, ``{"classes": [...], "input_shape": (1, 28, 28)}`` (either key may be left out); the run
checks, once the data set is built, that it has what its check said.

A check raises :class:`fmclf.OptionError` (or ``ValueError``, reported the same way) for bad
options; nothing is built, so it must be cheap and import nothing heavy. Exit code 2.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import ComponentError, FmclfError, OptionError
from .registry import ComponentRecord

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__fmclf_check__"


def checks(factory: Callable[..., Any]) -> Callable[[F], F]:
    """Decorator: the function below checks ``factory``'s options before any work (see the module)."""

    def attach(check: F) -> F:
        if not callable(check):
            raise TypeError(f"fmclf.checks({getattr(factory, '__name__', factory)!r}) decorates a function, "
                            f"got {check!r}")
        setattr(factory, _ATTRIBUTE, check)
        return check

    return attach


def check_of(record: ComponentRecord) -> Callable[..., Any] | None:
    """The check attached to a component's factory, or None."""
    check = getattr(record.factory, _ATTRIBUTE, None)
    return check if callable(check) else None


def _accepted(fn: Callable[..., Any], offered: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(offered)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(offered)
    return {k: v for k, v in offered.items() if k in params}


def run_check(record: ComponentRecord, options: Mapping[str, Any], known: Mapping[str, Any],
              listing: str = "") -> Any:
    """Call ``record``'s check (if any) with its ``options`` and the ``known`` core parameters it names;
    returns what it returned. A ``ValueError`` or ``TypeError`` is reported as bad options (exit 2); any
    other exception is a fault of the check (exit 1)."""
    check = check_of(record)
    if check is None:
        return None
    kwargs = _accepted(check, {**known, **options})
    try:
        return check(**kwargs)
    except FmclfError:
        raise
    except (ValueError, TypeError) as exc:
        raise OptionError(f"bad options for {record.describe()}: {str(exc).rstrip('.')}. "
                          f"{listing or 'See `fmclf plugins` for its options.'}") from None
    except Exception as exc:
        raise ComponentError(
            f"{record.describe()}: its option check raised {type(exc).__name__}: {exc}. This is a fault in that "
            f"component; report it to its authors, or choose another with `fmclf plugins`."
        ) from exc


def facts_of(record: ComponentRecord, returned: Any) -> dict[str, Any]:
    """What a data set's check says the data set will have: ``num_classes``, ``classes``, ``input_shape``,
    ``num_inputs``. Anything else it returned is refused as that check's fault."""
    if returned is None:
        return {}
    if not isinstance(returned, Mapping) or set(returned) - {"classes", "input_shape"}:
        raise ComponentError(
            f"{record.describe()}: its option check returned {returned!r}; a data set's check returns None or a "
            f"dict with 'classes' and/or 'input_shape'. Report this to its authors."
        )
    facts: dict[str, Any] = {}
    if returned.get("classes") is not None:
        facts["classes"] = [str(c) for c in returned["classes"]]
        facts["num_classes"] = len(facts["classes"])
    if returned.get("input_shape") is not None:
        shape = tuple(int(d) for d in returned["input_shape"])
        facts["input_shape"] = shape
        n = 1
        for d in shape:
            n *= d
        facts["num_inputs"] = n
    return facts
