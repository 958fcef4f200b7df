"""From a :class:`RunConfig` to live components.

:func:`resolve` looks every name up and checks every option without
importing torch, so a typo fails in milliseconds. :func:`assemble` then calls
the factories, on the device, in the order a run needs them.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from .config import RunConfig
from .engine import Parts, adapt_updater
from .errors import ComponentError, FmclfError, OptionError
from .options import accepted_core_params, resolve_options
from .plugins import PluginHost
from .registry import ComponentRecord


@dataclass
class Plan:
    """A checked configuration: the records to build and every option's value."""

    config: RunConfig
    records: dict[str, ComponentRecord] = field(default_factory=dict)  #: by option target
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def components(self) -> dict[str, str]:
        """``target -> "name (dist version)"``, for the run's record."""
        return {t: f"{r.qualified_name} {r.plugin.version or ''}".strip() for t, r in self.records.items()}


def resolve(config: RunConfig, host: PluginHost) -> Plan:
    """Validate ``config`` against the loaded plugins; draw a seed if none is set."""
    visualizers = [v for v in config.visualizers if v != "none"] or ["none"]
    config = replace(config, visualizers=visualizers)
    if config.seed is None:
        config.seed = secrets.randbelow(2**31)  # recorded, so the run can be repeated
    config.validate()
    plan = Plan(config)
    for target, name in config.targets().items():
        record = host.registry.get(target.split(".")[0], name)
        plan.records[target] = record
        plan.options[target] = resolve_options(record, config.options.get(target, {}))
    config.options = {t: dict(v) for t, v in plan.options.items()}
    return plan


def call_factory(record: ComponentRecord, core: dict[str, Any], options: dict[str, Any]) -> Any:
    """Call a factory with the core arguments it accepts and its options; a failure
    that is not already an fmclf error is reported as that component's fault."""
    accepted = accepted_core_params(record)
    kwargs = {k: v for k, v in core.items() if k in accepted}
    kwargs.update(options)
    try:
        return record.factory(**kwargs)
    except FmclfError:
        raise
    except Exception as exc:
        raise ComponentError(
            f"{record.describe()} failed to build: {type(exc).__name__}: {exc}. "
            f"Check its options (`fmclf plugins --kind {record.kind}`) or report this to its authors."
        ) from exc


def _check_dataset(record: ComponentRecord, dataset: Any) -> None:
    missing = [a for a in ("train", "test", "classes", "input_shape") if not hasattr(dataset, a)]
    if missing:
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


def require_shardable(record: ComponentRecord) -> None:
    """Refuse, at start-up, a data set whose factory cannot take ``shard=(rank, world_size)``."""
    if "shard" not in accepted_core_params(record):
        raise OptionError(
            f"{record.describe()} cannot run distributed: its factory takes no `shard` "
            f"argument, so every process would train on all the data. Run it in one process, or "
            f"ask its authors to accept shard=(rank, world_size)."
        )


def assemble(plan: Plan, *, device: Any, run_dir: Any = None, shard: tuple[int, int] | None = None, batch_size: int | None = None) -> Parts:
    """Build every component of ``plan`` on ``device``.

    ``shard=(rank, world)`` and a per-process ``batch_size`` are given when
    training is distributed; a data set that cannot shard then fails here,
    at start-up, with a message saying so.
    """
    import torch

    config, records, options = plan.config, plan.records, plan.options
    if shard is not None and shard[1] > 1:
        require_shardable(records["dataset"])
    torch.manual_seed(config.seed)
    dataset = call_factory(
        records["dataset"],
        {"batch_size": batch_size or config.batch_size, "device": device, "seed": config.seed, "shard": shard},
        options["dataset"],
    )
    _check_dataset(records["dataset"], dataset)
    input_shape = tuple(int(d) for d in dataset.input_shape)
    core_model = {"num_inputs": math.prod(input_shape), "num_classes": len(dataset.classes), "input_shape": input_shape}
    torch.manual_seed(config.seed)  # the same initial weights whatever the data set drew
    model = call_factory(records["model"], core_model, options["model"])
    if not isinstance(model, torch.nn.Module):
        raise ComponentError(f"{records['model'].describe()} returned {type(model).__name__}; a model must be a torch.nn.Module.")
    model.to(device)
    loss = call_factory(records["loss"], {"num_classes": len(dataset.classes)}, options["loss"])
    if not callable(loss):
        raise ComponentError(f"{records['loss'].describe()} returned {type(loss).__name__}, which is not callable; a loss is a callable (logits, y) -> per-example loss.")
    updater = call_factory(records["updater"], {"params": list(model.parameters()), "lr": config.lr}, options["updater"])
    try:
        updater = adapt_updater(updater)
    except TypeError as exc:
        raise ComponentError(f"{records['updater'].describe()}: {exc}; an updater has zero_grad() and step(batch_size).") from None
    visualizers = []
    for target, record in records.items():
        if record.kind == "visualizer":
            visualizers.append((record, call_factory(record, {"run_dir": run_dir}, options[target])))
    return Parts(dataset, model, loss, updater, visualizers, dict(records))
