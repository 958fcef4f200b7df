"""How a component says it can train in a batched group: many runs as one computation.

``fmclf compare`` trains the runs of a grid that differ only in seed, learning rate and per-model options
together, in one process, when their factories say they can with :func:`batchable`; what the declaration
promises for each kind (and what an updater's ``stacked`` returns) is in docs/comparing.md, "Making a plugin
batchable". Importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__fmclf_batchable__"


@dataclass(frozen=True)
class Batchable:
    """What a factory declared: the options that may differ per member, and its vectorised form."""

    per_model: tuple[str, ...] = ()
    stacked: Callable[..., Any] | None = None


def batchable(*, per_model: Sequence[str] = (), stacked: Callable[..., Any] | None = None) -> Callable[[F], F]:
    """Decorator on a component factory: runs using it may train together in a batched group (see the module).

    ``per_model``: options that may differ between the members of a group; ``stacked``: for an updater,
    the factory of its vectorised form (required there); for a model, its stacked forward (optional)."""
    if isinstance(per_model, str) or not all(isinstance(o, str) for o in per_model):
        raise TypeError(f"fmclf.batchable(per_model=...) takes a sequence of option names, got {per_model!r}")
    if stacked is not None and not callable(stacked):
        raise TypeError(f"fmclf.batchable(stacked=...) takes a callable, got {stacked!r}")
    declared = Batchable(tuple(per_model), stacked)

    def attach(factory: F) -> F:
        if not callable(factory):
            raise TypeError(f"fmclf.batchable(...) decorates a component factory, got {factory!r}")
        setattr(factory, _ATTRIBUTE, declared)
        return factory

    return attach


def batchable_of(factory: Any) -> Batchable | None:
    """What ``factory`` declared with :func:`batchable`, or None (it is trained run by run)."""
    found = getattr(factory, _ATTRIBUTE, None)
    return found if isinstance(found, Batchable) else None
