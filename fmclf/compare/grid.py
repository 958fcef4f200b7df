"""The grid of a comparison: its axes, its cells and the seeds every cell shares.

An axis is a run setting (``model``, ``loss`` ...) or a component option
(``loss.label_smoothing``) given more than one value; a cell is one point of
their product. Every cell runs with the same seeds, so cells are paired: seed
``s`` of one cell and seed ``s`` of another start from the same draws.
Importing this module imports no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..host.loading import PluginHost
from ..host.options import options_of
from ..kinds import BY_NAME
from ..numbers import is_number
from ..run.config import RunConfig

#: The run settings a comparison may vary, in the order cells and tables show them.
AXIS_SETTINGS = ("model", "loss", "updater", "dataset")
#: The scalar run settings that become an axis when given more than once (``--lr 0.1 --lr 0.01``), and the ones
#: --tune may tune (:data:`fmclf.compare.tuning.TUNABLE_SETTINGS`).
SCALAR_AXES = ("lr", "batch_size")

#: Bounds on every count a comparison takes, so a typo is a message, not a machine out of memory.
MAX_SEEDS, MAX_TRIALS, MAX_JOBS, MAX_RUNS = 1000, 1000, 256, 100_000


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its components, the grid options it applies, and the
    configuration each of its runs starts from (the seed is set per run)."""

    components: dict[str, str]  #: axis setting -> component name ("model" -> "nn")
    options: dict[str, str]  #: grid option -> its value as given ("loss.label_smoothing" -> "0.1")
    config: RunConfig = field(compare=False)

    @property
    def name(self) -> str:
        """A folder-safe, stable name: ``nn-fused-sgd-fashion-mnist-label_smoothing=0.1``."""
        parts = [*self.components.values(), *(f"{k.split('.')[-1]}={v}" for k, v in self.options.items())]
        return safe_name("-".join(parts))

    def label(self, varying: Sequence[str]) -> dict[str, str]:
        """The cell's values on the axes in ``varying`` (settings and options)."""
        both = {**self.components, **self.options}
        return {k: both.get(k, "-") for k in varying}


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits and ``._=+-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def seeds_from(base: int, n: int) -> list[int]:
    """The seeds of every cell: ``base, base + 1, ..., base + n - 1``. Asking for more
    seeds later keeps the first ones, so a comparison can grow."""
    if n < 1:
        raise UsageError(f"--seeds must be at least 1, got {n}. Give the number of seeds each cell runs with.")
    check_count("--seeds", n, MAX_SEEDS, "seeds each cell runs with")
    if base < 0 or base + n > 2**63:
        raise UsageError(f"--seed {base} with --seeds {n} leaves the range of seeds (0 to 2**63-1). Choose a smaller "
                         f"--seed.")
    return [base + i for i in range(n)]


def check_count(flag: str, n: int, most: int, what: str) -> None:
    """Refuse a count above ``most`` (``what``: what it counts, for the message)."""
    if n > most:
        raise UsageError(f"{flag} {n} is more than this command takes ({most}). It is the number of {what}; give "
                         f"at most {most}.")


def check_jobs(n: int, most: int | None = MAX_JOBS) -> None:
    """``--jobs`` is at least 1 and at most ``most`` (None: no bound above; an executor's factory holds its
    settings to the floor only, the command line has already held them to :data:`MAX_JOBS`)."""
    if n < 1:
        raise UsageError(f"--jobs must be at least 1, got {n}. It is how many runs train side by side.")
    if most is not None:
        check_count("--jobs", n, most, "runs that train side by side")


def option_axes(assignments: Sequence[tuple[str, str, str]]) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Split ``-o`` assignments ``(target, option, value)`` into fixed options (a key given
    once) and grid axes (a key repeated: each value one point, in the order given)."""
    values: dict[str, list[str]] = {}
    for target, key, value in assignments:
        seen = values.setdefault(f"{target}.{key}", [])
        if value in seen:
            raise UsageError(f"-o {target}.{key}={value} is given twice. Give each value of an option once.")
        seen.append(value)
    fixed: dict[str, dict[str, str]] = {}
    axes: dict[str, list[str]] = {}
    for full, vals in values.items():
        target, key = full.rsplit(".", 1)
        if len(vals) == 1:
            fixed.setdefault(target, {})[key] = vals[0]
        else:
            axes[full] = vals
    return fixed, axes


def build_cells(base: RunConfig, axes: dict[str, Sequence[str]], grid_options: dict[str, Sequence[str]],
                host: PluginHost) -> list[Cell]:
    """Every cell of the product of ``axes`` (setting -> values) and ``grid_options``
    (``target.option`` -> values), in that order, starting from ``base``.

    A grid option (and a fixed one for a kind on an axis) goes to the cells whose
    component at its target declares it:
    ``--loss naive --loss fused -o loss.label_smoothing=0 -o loss.label_smoothing=0.1``
    gives fused twice and naive once (naive has no such option). An option that
    no component on its axis declares is an error, as in ``fmclf run``.
    """
    for setting, values in axes.items():
        if not values:
            raise UsageError(f"the {setting} axis has no value.")
        if len(set(values)) != len(values):
            raise UsageError(f"--{setting} repeats a value ({', '.join(values)}). Give each value once.")
    settings = [s for s in AXIS_SETTINGS if s in axes] + [s for s in axes if s not in AXIS_SETTINGS]
    cells: list[Cell] = []
    seen: set[tuple] = set()
    fixed = [f"{t}.{k}" for t, opts in base.options.items() if t.split(".")[0] in settings for k in opts]
    used: set[str] = set()
    for point in itertools.product(*(axes[s] for s in settings)):
        config = copy.deepcopy(base)
        for setting, value in zip(settings, point):
            config = _set(config, setting, value)
        for full in fixed:  # a fixed option of a kind on an axis: only for the components that have it
            target, key = full.rsplit(".", 1)
            if _declares(config, full, host):
                used.add(full)
            else:
                del config.options[target][key]
        components = {s: _component(config, s) for s in AXIS_SETTINGS}
        scalars = {s: _component(config, s) for s in settings if s not in components}  # lr=0.1 in names and labels
        applies = {full: _declares(config, full, host) for full in grid_options}
        for values in itertools.product(*([*vals] if applies[full] else [None] for full, vals in grid_options.items())):
            cell_config = copy.deepcopy(config)
            chosen: dict[str, str] = dict(scalars)
            for full, value in zip(grid_options, values):
                if value is None:
                    continue
                target, key = full.rsplit(".", 1)
                cell_config.options.setdefault(target, {})[key] = value
                chosen[full] = value
            key = (tuple(components.items()), tuple(chosen.items()))
            if key not in seen:
                seen.add(key)
                cells.append(Cell(components, chosen, cell_config))
    for full in [*fixed, *grid_options]:
        if full not in used and not any(full in c.options for c in cells):
            target, key = full.rsplit(".", 1)
            names = sorted({_component(c.config, target) for c in cells})
            raise UsageError(
                f"-o {full}: no {target} of this comparison has option {key!r} ({', '.join(names)}). "
                f"`fmclf plugins --kind {target.split('.')[0]}` lists each one's options."
            )
    return cells


def varying(cells: Sequence[Cell]) -> list[str]:
    """The axes (settings, then options) on which the cells differ."""
    out = [s for s in cells[0].components if len({c.components[s] for c in cells}) > 1] if cells else []
    out += [k for k in dict.fromkeys(k for c in cells for k in c.options)]
    return out


def _set(config: RunConfig, setting: str, value: str) -> RunConfig:
    field_name = BY_NAME[setting].setting if setting in BY_NAME else setting
    if not hasattr(config, field_name):
        raise UsageError(f"a comparison cannot vary {setting!r}: runs have no such setting.")
    now = getattr(config, field_name)
    new: Any = value
    if isinstance(now, list):
        new = [value]
    elif is_number(now):  # a scalar axis: --lr 0.1 --lr 0.01
        try:
            new = type(now)(value)
        except ValueError:
            raise UsageError(f"--{setting.replace('_', '-')} {value!r} is not a number.") from None
    return dataclasses.replace(config, **{field_name: new})


def _component(config: RunConfig, setting: str) -> str:
    field_name = BY_NAME[setting].setting if setting in BY_NAME else setting
    value: Any = getattr(config, field_name, None)
    return "+".join(value) if isinstance(value, list) else str(value)


def _declares(config: RunConfig, full: str, host: PluginHost) -> bool:
    """Whether the component at the option's target in ``config`` has that option."""
    target, key = full.rsplit(".", 1)
    kind = target.split(".")[0]
    if BY_NAME[kind].many:  # visualizer.NAME: names its component itself
        return True
    record = host.registry.get(kind, _component(config, kind))
    return key.replace("-", "_") in {o.name for o in options_of(record)}
