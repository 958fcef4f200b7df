"""From a :class:`RunConfig` to live components. :func:`resolve` looks every name up and checks every option without
importing torch, so a typo fails in milliseconds; :func:`assemble` then calls the factories, on the device, in the order
a run needs them. :func:`check_processes` and :func:`check_shards` refuse, before any training, what cannot run in the
processes of a torchrun launch. :func:`prepare` is the step before training that a run alone and a batched group share:
resolve, then the device.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ComponentError, DataError, FmclfError, OptionError, UsageError
from ..host.checks import facts_of, run_check
from ..host.loading import PluginHost, env_flag
from ..host.options import accepted_core_params, options_of, resolve_options
from ..host.registry import ComponentRecord
from ..kinds import BY_NAME, core_params
from ..signals import import_torch
from ..train.blame import component_fault, memory_message, out_of_memory, torch_failed
from ..train.engine import Parts
from ..train.heldout import Metric
from ..wording import flag
from . import folder
from .config import RECORDED_METRICS, RunConfig
from .devices import launch_device

#: Set to 1, a run that would draw its seed refuses instead (tests/conftest.py sets it for the test suite).
REQUIRE_SEED = "FMCLF_REQUIRE_SEED"


@dataclass(frozen=True)
class Plan:
    """A run's every decision, each taken once: the settings (its seed drawn, every option resolved,
    each component named as a user reads it), the records to build and, once the runner has chosen
    them, the device and the thread and CUDA-graph decisions (in ``config``, which config.toml records).
    Frozen: a later decision is a changed copy (:meth:`decided`)."""

    config: RunConfig
    records: Mapping[str, ComponentRecord] = field(default_factory=dict)  #: by option target
    options: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    #: what the data set's check said it will have (``classes``, ``input_shape`` ...): see fmclf.host.checks
    facts: Mapping[str, Any] = field(default_factory=dict)
    #: by option target, the qualified name (``dist:name``) of each component, which config.toml records
    qualified: Mapping[str, str] = field(default_factory=dict)
    seed_drawn: bool = False  #: the config gave no seed: resolve drew the one it holds now
    device: Any = None  #: the torch.device the run trains on, once chosen (None before)

    def decided(self, **settings: Any) -> Plan:
        """This plan with settings the runner decides once the parts are built (``threads``, ``cuda_graphs``)
        or the processes agree on (``seed``), or with its ``device``."""
        device = settings.pop("device", self.device)
        return replace(self, config=replace(self.config, **settings), device=device)

    def recorded(self) -> RunConfig:
        """The settings as a run folder records them: every component by its qualified name, so that a
        plugin installed later that registers the same name changes nothing for this run."""
        return _renamed(self.config, self.qualified)

    def components(self) -> dict[str, str]:
        """``target -> "name (dist version)"``, for the run's record."""
        return {t: f"{r.qualified_name} {r.plugin.version or ''}".strip() for t, r in self.records.items()}


def check_seed(plan: Plan) -> None:
    """Refuse to train on a drawn seed where ``FMCLF_REQUIRE_SEED=1`` asks for a fixed one (a test suite
    sets it: a test that trains on a drawn seed passes or fails by luck)."""
    if plan.seed_drawn and env_flag(REQUIRE_SEED):
        raise UsageError(
            f"This run has no seed and would draw one, but {REQUIRE_SEED}=1 asks every run for a fixed seed "
            f"(a test suite sets it so that no result rests on a lucky draw). Pass {flag('seed', 'N')}, "
            f"or unset {REQUIRE_SEED} to let the run draw its seed.")


def resolve(config: RunConfig, host: PluginHost, objects: Mapping[str, ComponentRecord] | None = None) -> Plan:
    """Validate ``config`` against the loaded plugins; draw a seed if none is set. ``objects`` gives, by option target,
    the records of components that are Python objects (see :mod:`fmclf.run.objects`) instead of names to look up; the
    config's ``from_python`` names those targets, and one it names that ``objects`` lacks is refused."""
    objects = dict(objects or {})
    drawn = config.seed is None
    config = replace(
        config, visualizers=[v for v in config.visualizers if v != "none"] or ["none"],
        seed=secrets.randbelow(2**31) if drawn else config.seed,  # recorded, so the run can be repeated
        from_python=[t for t in config.targets() if t in objects or t in config.from_python])
    config.validate()
    missing = [t for t in config.from_python if t not in objects]
    if missing:
        raise UsageError(python_only(config, missing, "start it with `fmclf.fit`, passing those objects"))
    records = {t: objects.get(t) or host.registry.get(t.split(".")[0], name) for t, name in config.targets().items()}
    options = {t: resolve_options(r, config.options.get(t, {}), host.registry.list(r.kind)) for t, r in records.items()}
    # A Python object keeps its own name: it is no registry's, and a run folder records it by name only.
    qualified = {t: r.name if t in objects else host.registry.qualified(r) for t, r in records.items()}
    # Each component as a user reads it (plain unless ambiguous), whatever spelling selected it.
    shown = {t: r.name if t in objects else host.registry.select_as(r) for t, r in records.items()}
    plan = Plan(_renamed(replace(config, options={t: dict(v) for t, v in options.items()}), shown),
                {_retarget(t, shown[t]): r for t, r in records.items()},
                {_retarget(t, shown[t]): o for t, o in options.items()}, {},
                {_retarget(t, shown[t]): q for t, q in qualified.items()}, seed_drawn=drawn)
    plan = replace(plan, facts=run_checks(plan))
    # a component that gets the run folder must not name a file fmclf owns there (relative names: any folder)
    folder.check_options(plan.options, {t: r.kind for t, r in plan.records.items()})
    metric_keys(plan)  # two metrics recorded under one key are refused here, before any work
    return plan


def metric_keys(plan: Plan) -> dict[str, str]:
    """Option target -> the key each metric this run builds is recorded under (``ece``: valid_ece, test_ece)."""
    keys: dict[str, str] = {}
    taken = {key: f"every run's {name}" for name, key in RECORDED_METRICS.items()}
    for target, record in plan.records.items():
        if record.kind != "metric" or (record.plugin.builtin and record.name in RECORDED_METRICS):
            continue  # a built-in metric every run records anyway (accuracy, loss) is not built again
        key = record.name
        if key in taken:
            raise UsageError(
                f"{record.describe()} would be recorded as valid_{key} and test_{key}, which {taken[key]} "
                f"already is. Use one of them, or block the plugin you do not want with `fmclf -p no:PLUGIN`."
            )
        taken[key], keys[target] = record.describe(), key
    return keys


def _retarget(target: str, name: str) -> str:
    """The option target of ``target``'s component when it is called ``name``."""
    return BY_NAME[target.split(".", 1)[0]].target(name)


def _renamed(config: RunConfig, names: dict[str, str]) -> RunConfig:
    """``config`` with each component (by option target) called as ``names`` says, options following."""
    chosen = {row.setting: [names.get(row.target(n), n) for n in getattr(config, row.setting)] if row.many
              else names.get(row.target(getattr(config, row.setting)), getattr(config, row.setting))
              for row in BY_NAME.values()}
    options = {(_retarget(t, names[t]) if t in names else t): dict(v) for t, v in config.options.items()}
    return replace(config, **chosen, options=options)


def run_checks(plan: Plan) -> dict[str, Any]:
    """Every component's own check (:mod:`fmclf.host.checks`), the data set's first: what it says the data set will
    have (its classes) reaches the others' checks, before any data is read. Returns those facts."""
    config = plan.config
    known_by_kind = {"dataset": {"batch_size": config.batch_size, "seed": config.seed},
                     "updater": {"lr": config.lr, "epochs": config.epochs}}
    facts: dict[str, Any] = {}
    for target, record in plan.records.items():
        known = dict(known_by_kind.get(record.kind, {}))
        if record.kind in ("model", "loss"):
            known.update({k: v for k, v in facts.items() if k in core_params(record.kind)})
        listing = "Its options: " + "; ".join(o.describe() for o in options_of(record))
        returned = run_check(record, plan.options[target], known, listing)
        if record.kind == "dataset":
            facts = facts_of(record, returned)
    return facts


def python_only(config: RunConfig, targets: list[str], what_to_do: str) -> str:
    """The sentence refusing to rebuild a run's components that were Python objects, by name, from its settings."""
    named = [f"{t.split('.')[0]} {config.targets()[t]!r}" for t in targets]
    listing = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return (
        f"this run's {listing} {'was a Python object' if len(named) == 1 else 'were Python objects'} handed to "
        f"fmclf.fit, which a run folder records by name only, so fmclf cannot rebuild "
        f"{'it' if len(named) == 1 else 'them'} here; {what_to_do}."
    )


def call_factory(record: ComponentRecord, core: dict[str, Any], options: dict[str, Any]) -> Any:
    """Call a factory with the core arguments it accepts and its options; a failure
    that is not already an fmclf error is reported as that component's fault."""
    accepted = accepted_core_params(record)
    kwargs = {**{k: v for k, v in core.items() if k in accepted}, **options}
    try:
        return record.factory(**kwargs)
    except BaseException as exc:
        if not component_fault(exc):  # an fmclf error, or the user's own interrupt
            raise
        unloadable = torch_failed(exc)
        if unloadable:  # torch itself cannot load: no component's fault
            raise FmclfError(unloadable) from exc
        if out_of_memory(exc):
            raise ComponentError(memory_message(record.describe(), "while building it", exc)) from exc
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
        fits = f"{flag('batch_size', lower)} or {lower + w}" if lower else flag("batch_size", w)
        raise UsageError(
            f"{flag('batch_size', b)} is the global batch, split evenly over the {w} processes, so it must be "
            f"a multiple of {w}. Use {fits}; each process then takes batch-size / {w} examples a step, "
            f"and the run matches a one-process run with the same {flag('batch_size')}."
        )
    require_shardable(plan.records["dataset"])


def check_shards(dataset: Any, comm: Any) -> None:
    """Refuse data sets whose shards would make the processes of ``comm`` (a
    :class:`fmclf.dist.comm.Solo` or ``Comm``) take different numbers of steps."""
    if comm.world_size == 1:
        return
    from ..train.adapters import has_len  # torch is loaded by now

    train = dataset.train
    batches = len(train) if has_len(train) else None
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


def require_parameters(model_record: ComponentRecord, model: Any, updater_record: ComponentRecord) -> None:
    """Refuse a model with no trainable parameters before an updater is built from them: the updater
    would fail on an empty list (and be blamed), or train nothing."""
    if not any(getattr(p, "requires_grad", False) for p in model.parameters()):
        raise ComponentError(
            f"{model_record.describe()} has no trainable parameters (model.parameters() yields none that requires "
            f"grad), so {updater_record.describe()} has nothing to train. This is the model's doing: register its "
            f"weights as nn.Parameter (or report it to its authors), or choose another with `fmclf plugins`."
        )


def build(record: ComponentRecord, core: dict[str, Any], options: dict[str, Any]) -> Any:
    """Call the factory (see :func:`call_factory`) and check what it returned against
    its kind's contract (:mod:`fmclf.kinds`); returns it, adapted where the contract says so."""
    return BY_NAME[record.kind].accept(record, call_factory(record, core, options))


def assemble(plan: Plan, *, device: Any, run_dir: Any = None, shard: tuple[int, int] | None = None,
             batch_size: int | None = None, updater_epochs: int | None = None) -> Parts:
    """Build every component of ``plan`` on ``device``. ``shard=(rank, world)`` and a per-process ``batch_size`` are
    given when training is distributed; a data set that cannot shard then fails here, at start-up, saying so.
    ``updater_epochs`` (default: the run's epochs) is what the updater's schedule is built for: a resumed run's,
    whatever its ``--epochs`` now."""
    import torch

    config, records, options = plan.config, plan.records, plan.options
    if run_dir is not None:  # absolute paths into the run folder can be told now, before any work
        folder.check_options(options, {t: r.kind for t, r in records.items()}, run_dir)
    if shard is not None and shard[1] > 1:
        require_shardable(records["dataset"])
    torch.manual_seed(config.seed)
    core = {"batch_size": batch_size or config.batch_size, "device": device, "seed": config.seed, "shard": shard}
    dataset = build(records["dataset"], core, options["dataset"])
    # the data set, built, must have what its check said it would (the other checks relied on it)
    got = {"num_classes": len(dataset.classes), "input_shape": tuple(int(d) for d in dataset.input_shape)}
    for key in ("num_classes", "input_shape"):
        if key in plan.facts and plan.facts[key] != got[key]:
            raise ComponentError(
                f"{records['dataset'].describe()}: its option check said the data set has {key.replace('_', ' ')} "
                f"{plan.facts[key]}, but the data set it built has {got[key]}. Report this to its authors."
            )
    return assemble_on(plan, dataset, device=device, run_dir=run_dir, updater_epochs=updater_epochs)


def assemble_on(plan: Plan, dataset: Any, *, device: Any, run_dir: Any = None,
                updater_epochs: int | None = None) -> Parts:
    """Build every component of ``plan`` but the data set, which is given (built once for the members of a batched
    group): the model starts from the weights the plan's seed gives it; ``updater_epochs`` as for :func:`assemble`."""
    import torch

    config, records, options = plan.config, plan.records, plan.options
    input_shape = tuple(int(d) for d in dataset.input_shape)
    num_classes = len(dataset.classes)
    torch.manual_seed(config.seed)  # the same initial weights whatever the data set drew
    model_core = {"num_inputs": math.prod(input_shape), "num_classes": num_classes, "input_shape": input_shape}
    model = build(records["model"], model_core, options["model"])
    model.to(device)
    loss = build(records["loss"], {"num_classes": num_classes}, options["loss"])
    steps = {"epochs": updater_epochs or config.epochs, "steps_per_epoch": len(dataset.train)}
    if "params" in accepted_core_params(records["updater"]):
        require_parameters(records["model"], model, records["updater"])
    updater = build(records["updater"], {"params": list(model.parameters()), "lr": config.lr, **steps},
                    options["updater"])
    metrics = []
    for target, key in metric_keys(plan).items():
        built = build(records[target], {"num_classes": num_classes, "loss": loss}, options[target])
        if isinstance(built, torch.nn.Module):  # a torchmetrics.Metric keeps its state in buffers
            built.to(device)
        metrics.append(Metric(records[target], key, built))
    listeners = {kind: [(r, build(r, {"run_dir": run_dir}, options[t])) for t, r in records.items() if r.kind == kind]
                 for kind in ("visualizer", "callback")}
    return Parts(dataset, model, loss, updater, listeners["visualizer"], dict(records), metrics, listeners["callback"])


def prepare(config: RunConfig, host: PluginHost, comm: Any, check: Callable[[Plan], None] | None = None,
             objects: Mapping[str, ComponentRecord] | None = None) -> tuple[Plan, Any]:
    """Resolve the plan, ``check`` it (no torch yet), then the device; refuse what cannot run in these processes
    (``comm``'s, :mod:`fmclf.dist.comm`). Returns the plan, which holds the device, and the device. The step
    before a run's :class:`~fmclf.run.session.Session` or a batched group's training, which both take it."""
    plan = resolve(config, host, objects)
    if check is not None:
        check(plan)
    # torch from here on, once every setting is checked: a signal while it loads would abort the process, so
    # it waits, then stops the run
    import_torch()
    device = launch_device(plan.config.device, comm.launch, comm.backend)
    check_processes(plan, comm.world_size)
    if plan.config.cuda_graphs:  # refused off CUDA before any work
        from ..train.graphs import check_device

        check_device(device)
    if plan.config.threads is not None:
        import torch

        torch.set_num_threads(plan.config.threads)
    return plan.decided(device=device), device
