"""``fmclf compare --dry-run``: the grid, its seeds and trials, and the command of every run,
printed; nothing is trained or written."""

from __future__ import annotations

import pathlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..kinds import ROWS
from ..run.config import OWN_SETTINGS
from ..wording import COMMAND_LINE, flag, speaking
from .executor import Call
from .grid import Cell, varying
from .jobs import FAILED, FINISHED, NEW, Run
from .tuning import Protocol, space_text


@dataclass(frozen=True)
class Preview:
    """What a comparison would do."""

    cells: Sequence[Cell]
    seeds: Sequence[int]
    trials: Sequence[Run]  #: every cell's tuning trials (empty without --tune)
    runs: Sequence[Run]  #: the runs reported on (with --tune, each cell's chosen configuration)
    protocol: Protocol | None
    metric: tuple[str, bool] | None
    plugins: tuple[str, ...]  #: the -p specs each job loads


def _settings(config: Any) -> str:
    """The settings a run starts from, as ``fmclf run`` flags: its components (not the visualizers, which
    are the comparison's), every setting it gives a value, and its components' options."""
    parts = [f"{row.flag} {shlex.quote(name)}" for row in ROWS if row.name != "visualizer"
             for name in (getattr(config, row.setting) if row.many else [getattr(config, row.setting)])]
    with speaking(COMMAND_LINE):  # a command line, whichever front end asked
        parts += [flag(name, getattr(config, name)) for name in OWN_SETTINGS if getattr(config, name) is not None]
    parts += [f"-o {shlex.quote(f'{t}.{k}={v}')}" for t, opts in sorted(config.options.items())
              for k, v in sorted(opts.items()) if not t.startswith("visualizer")]
    return " ".join(parts)


def _command(run: Run, plugins: tuple[str, ...]) -> str:
    if run.state == NEW:  # no settings file yet: its settings as flags
        head = shlex.join(["fmclf", *Call(plugins=plugins).plugin_flags])
        return f"{head} run {_settings(run.config)} --out {shlex.quote(str(run.run_dir))}"
    return shlex.join(["fmclf", *run.call(plugins).args])


def show(preview: Preview, out: pathlib.Path, echo: Callable[[str], None]) -> None:
    """Print the grid of ``preview``: its cells, seeds, trials and every run's command and state."""
    cells, seeds = preview.cells, preview.seeds
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    axes = varying(list(cells))
    echo(f"dry run: {len(cells)} cell(s) x {len(seeds)} seed(s) ({seed_text}, the same in every cell) into {out}; "
         f"nothing is trained or written.")
    if preview.protocol is not None and preview.metric is not None:
        p, said = preview.protocol, preview.protocol.as_dict()  # worded as compare.md words it
        valid = cells[0].config.options.get("dataset", {}).get("valid")
        echo(f"tuning: {p.trials} trial(s) per cell over {space_text(said['space'])}, drawn by {said['sampler']}, "
             f"on the validation split (-o dataset.valid={valid}); each cell's best {preview.metric[0]} is then "
             f"trained on the {len(seeds)} seed(s) above and reported on test.")
        if p.prune == "halving":
            echo("successive halving: " + ", ".join(f"{r.trials} trial(s) to {r.epochs} epoch(s)" for r in p.ladder())
                 + "; each rung's better half resumes from its checkpoint, the rest stop there.")
    echo("cells:")
    for i, cell in enumerate(cells, start=1):
        label = ", ".join(f"{k}={v}" for k, v in cell.label(axes).items()) or cell.name
        echo(f"  {i}. {cell.name} ({label})")
    total = len(preview.trials) + len(preview.runs)
    done = [r for r in [*preview.trials, *preview.runs] if r.state in (FINISHED, FAILED)]
    echo(f"runs: {total} ({len(preview.trials)} trial(s), {len(preview.runs)} reported), {len(done)} already done:")
    for run in [*preview.trials, *preview.runs]:
        if preview.protocol is not None and run.trial is None:  # its configuration is chosen by the trials
            echo(f"  {run.name}: the cell's best trial's configuration with --seed {run.seed}")
            continue
        echo(f"  [{run.state}] {_command(run, preview.plugins)}")
