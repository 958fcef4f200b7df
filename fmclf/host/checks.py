"""A factory's cheap checks, run before any work: before torch is imported, before the data is read.

What an option's type and bounds cannot say (two options that exclude each other, a list as long as the data set
has classes) a plugin says in a check function attached to its factory with :func:`checks`; docs/plugins.md,
"Checking options before any work", says what it is given and what a data set's check may return. A check raises
:class:`fmclf.OptionError` (or ``ValueError``) for bad options: exit code 2.
"""

from __future__ import annotations

import inspect
import math
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


def _accepted(fn: Callable[..., Any], offered: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: offer it everything
        return dict(offered)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in offered.items() if takes_all or k in params}


def run_check(record: ComponentRecord, options: Mapping[str, Any], known: Mapping[str, Any],
              listing: str = "") -> Any:
    """Call ``record``'s check (if any) with its ``options`` and the ``known`` core parameters it names;
    returns what it returned. A ``ValueError`` or ``TypeError`` is reported as bad options (exit 2); any
    other exception is a fault of the check (exit 1)."""
    check = getattr(record.factory, _ATTRIBUTE, None)
    if not callable(check):
        return None
    try:
        return check(**_accepted(check, {**known, **options}))
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
        facts["input_shape"] = tuple(int(d) for d in returned["input_shape"])
        facts["num_inputs"] = math.prod(facts["input_shape"])
    return facts
