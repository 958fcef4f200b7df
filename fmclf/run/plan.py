"""From a :class:`RunConfig` to live components.

:func:`resolve` looks every name up and checks every option without
importing torch, so a typo fails in milliseconds. :func:`assemble` then calls
the factories, on the device, in the order a run needs them.
:func:`check_processes` and :func:`check_shards` refuse, before any training,
what cannot run in the processes of a torchrun launch.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ComponentError, DataError, FmclfError, OptionError, UsageError
from ..host.loading import PluginHost
from ..host.options import accepted_core_params, resolve_options
from ..host.registry import ComponentRecord
from ..kinds import BY_NAME
from ..train.engine import Parts
from .config import RunConfig


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
        plan.options[target] = resolve_options(record, config.options.get(target, {}), host.registry.list(record.kind))
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


def require_shardable(record: ComponentRecord) -> None:
    """Refuse, at start-up, a data set whose factory cannot take ``shard=(rank, world_size)``."""
    if "shard" not in accepted_core_params(record):
        raise OptionError(
            f"{record.describe()} cannot run distributed: its factory takes no `shard` "
            f"argument, so every process would train on all the data. Run it in one process, or "
            f"ask its authors to accept shard=(rank, world_size)."
        )


def check_processes(plan: Plan, world_size: int) -> None:
    """Refuse, at start-up, what cannot run in ``world_size`` processes: a global batch
    they cannot split evenly, a data set that cannot shard. Nothing to refuse for one."""
    if world_size == 1:
        return
    b, w = plan.config.batch_size, world_size
    if b % w:
        lower = b // w * w
        fits = f"--batch-size {lower} or {lower + w}" if lower else f"--batch-size {w}"
        raise UsageError(
            f"--batch-size {b} is the global batch, split evenly over the {w} processes, so it must be "
            f"a multiple of {w}. Use {fits}; each process then takes batch-size / {w} examples a step, "
            f"and the run matches a one-process run with the same --batch-size."
        )
    require_shardable(plan.records["dataset"])


def shard_args(batch_size: int, rank: int, world_size: int) -> dict[str, Any]:
    """:func:`assemble`'s ``shard`` and per-process ``batch_size`` for process ``rank``
    of ``world_size`` (none for a process on its own)."""
    if world_size == 1:
        return {}
    return {"shard": (rank, world_size), "batch_size": batch_size // world_size}


def check_shards(dataset: Any, comm: Any) -> None:
    """Refuse data sets whose shards would make the processes of ``comm`` (a
    :class:`fmclf.dist.comm.Solo` or ``Comm``) take different numbers of steps."""
    if comm.world_size == 1:
        return
    train = dataset.train
    try:
        batches = len(train)
    except TypeError:
        batches = None
    sizes = {"training batches": batches, "training examples": getattr(train, "num_examples", None)}
    comm.same_everywhere(
        "the size of their training shards", sizes,
        "Every process must take the same number of steps: the data set's factory must cut each shard "
        "(shard=(rank, world_size)) to the same length, as fmclf.data.shard does.",
    )
    if batches == 0 or sizes["training examples"] == 0:
        raise comm.alike(DataError(
            f"the training set is too small to give each of the {comm.world_size} processes one example. "
            f"Use fewer processes, or more data."
        ))


def build(record: ComponentRecord, core: dict[str, Any], options: dict[str, Any]) -> Any:
    """Call the factory (see :func:`call_factory`) and check what it returned against
    its kind's contract (:mod:`fmclf.kinds`); returns it, adapted where the contract says so."""
    return BY_NAME[record.kind].accept(record, call_factory(record, core, options))


def assemble(
    plan: Plan, *, device: Any, run_dir: Any = None,
    shard: tuple[int, int] | None = None, batch_size: int | None = None,
) -> Parts:
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
    core = {"batch_size": batch_size or config.batch_size, "device": device, "seed": config.seed, "shard": shard}
    dataset = build(records["dataset"], core, options["dataset"])
    input_shape = tuple(int(d) for d in dataset.input_shape)
    num_classes = len(dataset.classes)
    torch.manual_seed(config.seed)  # the same initial weights whatever the data set drew
    model_core = {"num_inputs": math.prod(input_shape), "num_classes": num_classes, "input_shape": input_shape}
    model = build(records["model"], model_core, options["model"])
    model.to(device)
    loss = build(records["loss"], {"num_classes": num_classes}, options["loss"])
    updater = build(records["updater"], {"params": list(model.parameters()), "lr": config.lr}, options["updater"])
    listeners = [(r, build(r, {"run_dir": run_dir}, options[t])) for t, r in records.items() if BY_NAME[r.kind].many]
    return Parts(dataset, model, loss, updater, listeners, dict(records))
