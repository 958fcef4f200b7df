"""The component kinds, one row each: everything the core knows about a kind.

Adding a kind is one row here, a hookspec and a ``check_KIND`` in :mod:`fmclf.testing` (docs/architecture.md).
Importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ComponentError

if TYPE_CHECKING:
    from .host.registry import ComponentRecord


@dataclass(frozen=True)
class Kind:
    """One kind of component."""

    name: str  #: "loss"
    plural: str  #: "losses": the hook is register_<plural>, the run setting of a `many` kind is <plural>
    core: tuple[str, ...]  #: parameters the core passes to a factory that asks for them
    #: checks (and may adapt) what a factory built; by default nothing (every event of a listener is optional)
    accept: Callable[[ComponentRecord, Any], Any] = lambda record, obj: obj  # noqa: ARG005
    many: bool = False  #: a run uses several: the flag repeats and options name the component

    @property
    def hook(self) -> str:
        """The hook that registers components of this kind."""
        return f"register_{self.plural}"

    @property
    def flag(self) -> str:
        """The command-line flag that chooses one (repeatable when ``many``)."""
        return f"--{self.name}"

    @property
    def setting(self) -> str:
        """The :class:`fmclf.run.config.RunConfig` field that names the chosen component(s)."""
        return self.plural if self.many else self.name

    @property
    def option_prefix(self) -> str:
        """How ``-o`` addresses a component of this kind: ``loss`` or ``visualizer.NAME``."""
        return self.target("NAME")

    def target(self, component: str) -> str:
        """The option target of the chosen ``component``: ``loss``, or ``visualizer.NAME``."""
        return f"{self.name}.{component}" if self.many else self.name


def _accept_dataset(record: ComponentRecord, dataset: Any) -> Any:
    if missing := [a for a in ("train", "test", "classes", "input_shape") if not hasattr(dataset, a)]:
        raise ComponentError(
            f"{record.describe()} returned {type(dataset).__name__}, which lacks {', '.join(missing)}; "
            f"a data set has train, test, classes and input_shape."
        )
    try:
        len(dataset.train)
    except TypeError:
        raise ComponentError(
            f"{record.describe()}: its train batches have no len(); fmclf needs the number of "
            f"batches per epoch (for progress, and to resume mid-epoch). Give the train iterable a __len__."
        ) from None
    return dataset


def _accept_model(record: ComponentRecord, model: Any) -> Any:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ComponentError(f"{record.describe()} returned {type(model).__name__}; a model must be a torch.nn.Module.")
    return model


def _accept_loss(record: ComponentRecord, loss: Any) -> Any:
    if not callable(loss):
        raise ComponentError(
            f"{record.describe()} returned {type(loss).__name__}, which is not callable; "
            f"a loss is a callable (logits, y) -> per-example loss."
        )
    return loss


def _accept_updater(record: ComponentRecord, updater: Any) -> Any:
    from .train.updaters import adapt_updater

    try:
        return adapt_updater(updater)
    except TypeError as exc:
        raise ComponentError(f"{record.describe()}: {exc}; an updater has zero_grad() and step(batch_size), or is a "
                             f"torch.optim.Optimizer, or a pair (optimizer, scheduler).") from None


def _accept_metric(record: ComponentRecord, metric: Any) -> Any:
    if missing := [m for m in ("update", "compute", "reset") if not callable(getattr(metric, m, None))]:
        raise ComponentError(
            f"{record.describe()} returned {type(metric).__name__}, which lacks "
            f"{', '.join(m + '()' for m in missing)}; "
            f"a metric has update(logits, y), compute() and reset() (a torchmetrics.Metric has all three)."
        )
    if hasattr(metric, "sync_on_compute"):  # a torchmetrics.Metric: fmclf gathers the held-out data itself
        metric.sync_on_compute = False
        metric._to_sync = False  # what torchmetrics reads; set from sync_on_compute only in its __init__
    return metric


ROWS: tuple[Kind, ...] = (
    Kind("dataset", "datasets", ("batch_size", "device", "seed", "shard"), _accept_dataset),
    Kind("model", "models", ("num_inputs", "num_classes", "input_shape"), _accept_model),
    Kind("loss", "losses", ("num_classes",), _accept_loss),
    Kind("updater", "updaters", ("params", "lr", "epochs", "steps_per_epoch"), _accept_updater),
    Kind("metric", "metrics", ("num_classes", "loss"), _accept_metric, many=True),
    Kind("visualizer", "visualizers", ("run_dir",), many=True),
    Kind("callback", "callbacks", ("run_dir",), many=True),
)

BY_NAME: dict[str, Kind] = {k.name: k for k in ROWS}

#: The splits a data set may provide: train and test always, valid optionally.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: What a run has that is no core parameter (yet) but that a factory may well ask for by name,
#: believing fmclf passes it: the live model, and the run's length (which updaters with a schedule need).
RUN_NAMES: tuple[str, ...] = ("model", "epochs", "steps_per_epoch")

#: The kind names, in the order a run assembles them.
KINDS: tuple[str, ...] = tuple(BY_NAME)


def core_params(name: str) -> tuple[str, ...]:
    """The parameters the core passes to factories of kind ``name``; a KeyError names the kinds there are."""
    if name not in BY_NAME:
        raise KeyError(f"unknown component kind {name!r}; kinds are: {', '.join(KINDS)}")
    return BY_NAME[name].core


def lookalikes(name: str) -> dict[str, tuple[str, ...]]:
    """Parameter names that a factory of kind ``name`` is not given but that look as if fmclf gave them: another
    kind's core parameters, and :data:`RUN_NAMES`. Maps each to the kinds that do get it (empty: none does). A
    name that becomes a core parameter of kind ``name`` here stops being a lookalike for it."""
    own = core_params(name)
    params = dict.fromkeys([*(p for row in ROWS for p in row.core), *RUN_NAMES])  # in order, each once
    return {p: tuple(row.name for row in ROWS if p in row.core) for p in params if p not in own}
