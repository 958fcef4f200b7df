"""How a component says it can train in a batched group: many runs as one computation.

``fmclf compare`` trains the runs of a grid that differ only in seed, learning
rate and per-model options together, in one process (see docs/comparing.md).
A component takes part only when its factory says it can, with
:func:`batchable`; a component that says nothing is trained run by run, as
before. What the declaration promises depends on the kind:

- **dataset**: its splits are :class:`fmclf.data.TensorBatches`, whose order
  depends only on the run's seed, so one copy of the data serves every seed.
- **model**: the module is a pure function of its parameters and input
  (``torch.func.functional_call`` under ``vmap``: no in-place buffer updates,
  no random draws), so the members' parameters can be stacked. ``stacked``,
  optional, is a faster form of the stacked forward: ``stacked(params, buffers,
  X)`` with each parameter's first dimension the member, returning logits
  (members, N, classes); without it ``torch.func.vmap`` runs the module.
- **loss**: each row's loss depends on that row alone, so the rows of many
  members, one after another, give each member's losses.
- **updater**: ``stacked`` builds the vectorised update: called as
  ``stacked(params=..., members=...)`` with the stacked parameters (leading
  dimension: the member) and each member's own updater, as its factory built
  it; it returns an object with ``zero_grad()``, ``step(batch_size)``,
  ``reduction`` ("sum" or "mean"), ``lrs()`` (each member's rate of the
  latest step), ``drop(k)`` (member k diverged: stop updating it) and
  ``export(k)`` (put member k's state back into its own updater, which its
  checkpoint saves). ``fmclf.testing.check_batched`` checks it gives the
  numbers the member updaters give alone.

``per_model`` names the options that may differ between the members of one
group (a learning-rate schedule, momentum); any other option must be the same
in all of them. Importing this module imports no torch.
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
