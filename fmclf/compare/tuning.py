"""Tuning with an equal budget: ``--tune SETTING=SPACE --trials T``.

Every cell gets exactly T trials, each an ordinary run (``DIR/runs/CELL-trialK``)
on the validation split, with the trial seeds (disjoint from the seeds the chosen
configuration is then reported on). Optuna drives the search through ask/tell,
one study per cell in one journal file in the comparison folder, so a rerun
finds every trial it asked for by number and continues. The default sampler is
a seeded Sobol sequence (every cell with the same space gets the same points);
``tpe`` is Optuna's seeded TPE. Importing this module imports neither torch nor
Optuna (only a tuned comparison does).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pathlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..host.loading import PluginHost
from ..host.options import options_of
from ..run.config import OWN_SETTINGS, RunConfig
from .grid import MAX_SEEDS, MAX_TRIALS, SCALAR_AXES, Cell, check_count

JOURNAL = "tuning.journal"
#: The fraction of the training set held out for validation when tuning and none is given.
DEFAULT_VALID = "0.1"
DEFAULT_TRIALS = 8
SAMPLERS = ("qmc", "tpe")
#: Run settings a trial may tune, the ones a grid may vary too (any other numeric setting decides how, not what,
#: a run computes), each with the type it holds.
TUNABLE_SETTINGS = {name: OWN_SETTINGS[name][0] for name in SCALAR_AXES}
_SPACE_HELP = "Write --tune SETTING=log:A..B, SETTING=lin:A..B or SETTING=V1,V2,... (for example lr=log:0.001..1)."


@dataclass(frozen=True)
class Dimension:
    """One tuned setting: ``lr`` or a component option ``updater.momentum`` /
    ``updater.torch-sgd.momentum`` (only for that component)."""

    key: str
    scale: str  #: "log", "lin" or "list"
    low: float = 0.0
    high: float = 0.0
    values: tuple[float, ...] = ()
    integer: bool = False

    @property
    def setting(self) -> str | None:
        """The run setting it tunes, or None for a component option."""
        return self.key if self.key in TUNABLE_SETTINGS else None

    def target(self) -> tuple[str, str | None, str]:
        """``(kind, component or None, option)`` of a component option."""
        parts = self.key.split(".")
        return (parts[0], None, parts[1]) if len(parts) == 2 else (parts[0], ".".join(parts[1:-1]), parts[-1])

    def applies(self, config: RunConfig) -> bool:
        """Whether this dimension changes a run of ``config`` (an option of another component does not)."""
        if self.setting is not None:
            return True
        kind, name, _ = self.target()
        return name is None or getattr(config, kind) == name

    def distribution(self) -> Any:
        """Its Optuna distribution."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.scale == "list":
            return CategoricalDistribution(list(self.values))
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.scale == "log")
        return FloatDistribution(self.low, self.high, log=self.scale == "log")

    def apply(self, config: RunConfig, value: Any) -> RunConfig:
        """``config`` with ``value`` set."""
        if self.setting is not None:
            return dataclasses.replace(config, **{self.setting: TUNABLE_SETTINGS[self.setting](value)})
        kind, _, option = self.target()
        config.options.setdefault(kind, {})[option] = repr(value) if isinstance(value, float) else str(value)
        return config

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (compare.json's protocol)."""
        if self.scale == "list":
            return {"key": self.key, "values": list(self.values)}
        return {"key": self.key, "scale": self.scale, "low": self.low, "high": self.high, "integer": self.integer}


@dataclass(frozen=True)
class Protocol:
    """How a tuned comparison chooses each cell's configuration."""

    space: tuple[Dimension, ...]
    trials: int
    sampler: str
    prune: str = "none"  #: "halving": successive halving of each cell's trials (:mod:`fmclf.compare.halving`)
    epochs: int = 0  #: the epochs of a trial that is not stopped early

    def with_split(self, base: RunConfig) -> RunConfig:
        """``base`` with the validation split the trials are scored on (``-o dataset.valid``, 0.1 unless given)."""
        config = copy.deepcopy(base)
        config.options.setdefault("dataset", {}).setdefault("valid", DEFAULT_VALID)
        return config

    def distributions(self, config: RunConfig) -> dict[str, Any]:
        """The Optuna distributions of the dimensions that apply to ``config``."""
        return {d.key: d.distribution() for d in self.space if d.applies(config)}

    def configure(self, config: RunConfig, params: dict[str, Any]) -> RunConfig:
        """``config`` with a trial's ``params`` set."""
        out = copy.deepcopy(config)
        for d in self.space:
            if d.key in params:
                out = d.apply(out, params[d.key])
        return out

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (compare.json)."""
        out = {"trials_per_cell": self.trials, "sampler": _sampler_text(self.sampler),
               "space": [d.as_dict() for d in self.space], "trial_seeds": f"SEED + {MAX_SEEDS} + K for trial K",
               "prune": self.prune}
        if self.prune == "halving":
            out["rungs"] = [{"epochs": r.epochs, "trials": r.trials, "promoted": r.keep} for r in self.ladder()]
        return out

    def ladder(self) -> list[Any]:
        """The rungs of successive halving (one rung, every trial to the full epochs, without it)."""
        from .halving import Rung, rungs

        return rungs(self.trials, self.epochs) if self.prune == "halving" else [Rung(self.epochs, self.trials,
                                                                                         self.trials)]


def trial_seed(base: int, k: int) -> int:
    """The seed of trial ``k``: past every seed ``--seeds`` can give, so the chosen configuration's
    seeds are never a trial's."""
    return base + MAX_SEEDS + k


def _sampler_text(name: str) -> str:
    return {"qmc": "Optuna QMCSampler (Sobol, seed 0)", "tpe": "Optuna TPESampler (seed 0)"}[name]


def space_text(space: Sequence[dict[str, Any]]) -> str:
    """A search space in words, from its JSON form (:meth:`Dimension.as_dict`, as compare.json keeps it), for
    compare.md and the dry run alike: ``lr log:0.001..1, updater.momentum in {0.5, 0.9}``."""
    return ", ".join(d["key"] + (" in {" + ", ".join(f"{v:g}" for v in d["values"]) + "}" if "values" in d
                                 else f" {d['scale']}:{d['low']:g}..{d['high']:g}") for d in space)


def parse_dimension(text: str, config: RunConfig, host: PluginHost) -> Dimension:
    """One ``--tune`` value, checked against the components of ``config`` (and ``host``'s options)."""
    key, sep, space = text.partition("=")
    key = key.strip()
    if not sep or not key or not space.strip():
        raise UsageError(f"--tune {text!r}: {_SPACE_HELP}")
    integer = _is_integer(key, text, host)
    space = space.strip()
    if space[:4] in ("log:", "lin:"):
        low_text, dots, high_text = space[4:].partition("..")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            low = high = math.nan
        if not dots or not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise UsageError(f"--tune {text!r}: the range must be two numbers A..B with A < B. {_SPACE_HELP}")
        if space[:3] == "log" and low <= 0:
            raise UsageError(f"--tune {text!r}: a log range needs A > 0. Use lin:{low_text}..{high_text} instead.")
        return Dimension(key, space[:3], low, high, integer=integer)
    try:
        values = tuple((int if integer else float)(v) for v in space.split(","))
    except ValueError:
        raise UsageError(f"--tune {text!r}: every value must be a{'n integer' if integer else ' number'}. "
                         f"{_SPACE_HELP}") from None
    if len(set(values)) != len(values):
        raise UsageError(f"--tune {text!r} repeats a value. Give each value once.")
    return Dimension(key, "list", values=values, integer=integer)


def _is_integer(key: str, text: str, host: PluginHost) -> bool:
    """Whether the tuned setting or option takes integers; refuses what cannot be tuned."""
    if key in TUNABLE_SETTINGS:
        return TUNABLE_SETTINGS[key] is int
    parts = key.split(".")
    from ..kinds import BY_NAME

    if len(parts) < 2 or parts[0] not in BY_NAME or BY_NAME[parts[0]].many:
        raise UsageError(f"--tune {text!r}: {key!r} is neither a setting that can be tuned "
                         f"({', '.join(TUNABLE_SETTINGS)}) nor a component option such as updater.momentum or "
                         f"updater.torch-sgd.momentum.")
    kind, option = parts[0], parts[-1]
    names = [".".join(parts[1:-1])] if len(parts) > 2 else host.registry.names(kind)
    found = [o for n in names for o in options_of(host.registry.get(kind, n)) if o.name == option.replace("-", "_")]
    if not found:
        raise UsageError(f"--tune {text!r}: no {kind} {'named ' + names[0] + ' ' if len(parts) > 2 else ''}has an "
                         f"option {option!r}. `fmclf plugins --kind {kind}` lists each one's options.")
    spec = found[0].type
    if spec.base not in (int, float) or spec.sequence or spec.choices:
        raise UsageError(f"--tune {text!r}: option {option!r} takes {spec}, not a number; only numbers are tuned. "
                         f"Give its values with -o {kind}.{option}=V1 -o {kind}.{option}=V2 for a grid instead.")
    return spec.base is int


def protocol_of(tune: Sequence[str], trials: int | None, sampler: str | None, base: RunConfig,
                grid_options: dict[str, Sequence[str]], host: PluginHost, prune: str | None = None) -> Protocol:
    """The tuning protocol of ``--tune``/``--trials``/``--sampler``, every piece checked before anything runs."""
    if not tune:
        raise UsageError("--trials, --sampler and --prune go with --tune: name what to tune, for example "
                         "--tune lr=log:0.001..1 --trials 8.")
    trials = DEFAULT_TRIALS if trials is None else trials
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}. It is how many trials every cell gets.")
    check_count("--trials", trials, MAX_TRIALS, "trials every cell gets")
    space = tuple(parse_dimension(text, base, host) for text in tune)
    keys = [d.key for d in space]
    for d in space:
        if keys.count(d.key) > 1:
            raise UsageError(f"--tune {d.key} is given twice. Give one range or list per setting.")
        if d.setting is None:
            kind, _, option = d.target()
            if f"{kind}.{option}" in grid_options or option in base.options.get(kind, {}):
                raise UsageError(f"{d.key} is both tuned (--tune) and set (-o {kind}.{option}). Give one of them.")
        elif d.setting in grid_options:  # pragma: no cover - settings are never option axes
            raise UsageError(f"{d.key} is both tuned and an axis.")
    from ..kinds import BY_NAME

    dataset = host.registry.get("dataset", base.dataset)
    if "valid" not in {o.name for o in options_of(dataset)}:
        raise UsageError(
            f"--tune chooses each cell's configuration on a validation split, and the data set {base.dataset!r} "
            f"has no 'valid' option to hold one out. Use a data set that has it (`fmclf plugins --kind "
            f"{BY_NAME['dataset'].name}` lists each one's options), or compare without --tune."
        )
    valid = base.options.get("dataset", {}).get("valid")
    if valid is not None and str(valid).strip() in ("0", "0.0", "none"):
        raise UsageError("--tune needs a validation split, and -o dataset.valid=0 holds none out. Give a fraction "
                         "such as -o dataset.valid=0.1 (the default when tuning).")
    if prune == "halving":
        _check_halving(base, grid_options)
    return Protocol(space, trials, sampler or "qmc", prune or "none", base.epochs)


def _check_halving(base: RunConfig, grid_options: dict[str, Sequence[str]]) -> None:
    """Successive halving resumes a trial with more --epochs, and a resumed run keeps the schedule it was built
    with (for the epochs it started with; past its end the rate holds): a promoted trial with a schedule that
    depends on the run's length would go on at its end rate (0 for cosine), so such a schedule is refused."""
    schedules = {str(base.options.get("updater", {}).get("schedule", "constant")),
                 *(str(v) for v in grid_options.get("updater.schedule", ()))}
    scheduled = sorted(schedules - {"constant", "none"})
    if scheduled:
        raise UsageError(
            f"--prune halving resumes the promoted trials with more --epochs, and a resumed run keeps the schedule "
            f"it was built with: a {scheduled[0]} schedule built for a rung's few epochs would hold its last rate "
            f"(0 for cosine) from there on, and the promoted trials would not train. Use -o "
            f"updater.schedule=constant with --prune halving, or tune a scheduled updater without --prune."
        )


class Studies:
    """The comparison's Optuna studies, one per cell, in ``DIR/tuning.journal``."""

    def __init__(self, root: pathlib.Path | None, protocol: Protocol, maximize: bool) -> None:
        """``root`` None: in memory, nothing written (a dry run's preview of the points)."""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.protocol = protocol
        self.maximize = maximize
        self._optuna = optuna
        self._storage = None if root is None else JournalStorage(JournalFileBackend(str(root / JOURNAL)))

    def _study(self, cell: Cell) -> Any:
        optuna = self._optuna
        with warnings.catch_warnings():  # QMCSampler is marked experimental
            warnings.simplefilter("ignore")
            sampler = (optuna.samplers.QMCSampler(seed=0) if self.protocol.sampler == "qmc"
                       else optuna.samplers.TPESampler(seed=0))
            return optuna.create_study(study_name=cell.name, storage=self._storage, sampler=sampler,
                                       direction="maximize" if self.maximize else "minimize", load_if_exists=True)

    def trials(self, cell: Cell) -> list[dict[str, Any]]:
        """Trials 0..T-1 of ``cell``: those the journal holds, and the missing ones asked for now, in order.
        Each: ``{"number", "params", "state", "value"}``."""
        study = self._study(cell)
        have = {t.number: t for t in study.get_trials(deepcopy=False)}
        distributions = self.protocol.distributions(cell.config)
        for _ in range(len(have), self.protocol.trials):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask(distributions)
            have[trial.number] = trial
        return [_as_dict(have[k]) for k in sorted(have)[: self.protocol.trials]]

    def _running(self, cell: Cell, number: int) -> tuple[Any, Any] | None:
        """``cell``'s study and its trial ``number``, unless that trial has ended (it is recorded once)."""
        study = self._study(cell)
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        return None if trial.state.is_finished() else (study, trial)

    def prune(self, cell: Cell, number: int, rungs: dict[int, float | None]) -> None:
        """Record trial ``number`` as stopped by successive halving, with its value at each rung, once."""
        if (found := self._running(cell, number)) is None:
            return
        self.report(cell, number, rungs)
        found[0].tell(number, state=self._optuna.trial.TrialState.PRUNED)

    def report(self, cell: Cell, number: int, rungs: dict[int, float | None]) -> None:
        """Record a running trial's validation value at each rung's epochs (Optuna's intermediate values)."""
        if (found := self._running(cell, number)) is None:
            return
        study, trial = found
        running = self._optuna.trial.Trial(study, trial._trial_id)
        for step, value in rungs.items():
            if value is not None and step not in trial.intermediate_values:
                running.report(value, step)

    def tell(self, cell: Cell, number: int, value: float | None) -> None:
        """Record trial ``number``'s validation value (None: it failed) once."""
        if (found := self._running(cell, number)) is None:
            return
        state = self._optuna.trial.TrialState
        found[0].tell(number, value, state=state.COMPLETE if value is not None else state.FAIL)


def _as_dict(trial: Any) -> dict[str, Any]:
    """A trial of the journal (a FrozenTrial) or one just asked for (a Trial, running)."""
    state = getattr(trial, "state", None)
    name = state.name.lower() if state is not None else "running"
    value = trial.value if name == "complete" else None
    return {"number": trial.number, "params": dict(trial.params), "state": name, "value": value}


def best(trials: Sequence[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    """The trial with the best validation value (the lowest number among equals); None when none completed."""
    done = [t for t in trials if t.get("value") is not None and math.isfinite(t["value"])]
    if not done:
        return None
    return min(done, key=lambda t: (-t["value"] if maximize else t["value"], t["number"]))
