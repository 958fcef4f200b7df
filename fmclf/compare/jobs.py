"""The runs of a comparison on disk, and what each needs next.

``DIR/runs/NAME`` is an ordinary run folder. Beside it, ``DIR/jobs/`` keeps
what the comparison itself needs: ``NAME.toml`` (the settings a new run
starts from, read as a run's config file), ``NAME.log`` (its output) and,
for a run that failed, ``NAME.json`` (its exit code and one-line reason), so
the next invocation reports it instead of training it again. Importing this
module imports no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import atomic
from ..errors import ConfigError, FmclfError, UsageError
from ..host.loading import PluginHost
from ..run import folder
from ..run.config import RESUMABLE, RunConfig
from ..run.plan import resolve
from .executor import Call
from .grid import Cell

RUNS, JOBS = "runs", "jobs"

#: What a run needs next.
FINISHED, FAILED, RESUME, EXTEND, NEW = "finished", "failed", "resume", "extend", "new"


@dataclass
class Run:
    """One seed of one cell."""

    cell: Cell
    seed: int
    config: RunConfig  #: the cell's configuration with this seed and the thread count
    root: pathlib.Path  #: the comparison's folder
    state: str = NEW
    reason: str = ""  #: why it failed (one line)
    diverged: bool = False
    trial: int | None = None  #: the tuning trial it is (None: a run of the cell's chosen configuration)

    @property
    def name(self) -> str:
        """``CELL-seedS``, or ``CELL-trialK`` for tuning trial K."""
        return f"{self.cell.name}-seed{self.seed}" if self.trial is None else f"{self.cell.name}-trial{self.trial}"

    @property
    def run_dir(self) -> pathlib.Path:
        return self.root / RUNS / self.name

    @property
    def settings_file(self) -> pathlib.Path:
        return self.root / JOBS / f"{self.name}.toml"

    @property
    def log(self) -> pathlib.Path:
        return self.root / JOBS / f"{self.name}.log"

    @property
    def failure_file(self) -> pathlib.Path:
        return self.root / JOBS / f"{self.name}.json"

    def call(self, plugins: Sequence[str] = ()) -> Call:
        """The call that does what the run needs next, in a process that loads ``plugins``."""
        c = self.config
        if self.state == NEW:
            return Call(out=self.run_dir, settings=self.settings_file, plugins=tuple(plugins))
        # What a resumed run may be told (RESUMABLE); unset (cuda_graphs, threads): it decides, as the first one
        # did. The visualizers stay those its folder records.
        overrides = [(k, getattr(c, k)) for k in RESUMABLE if k != "visualizers" and getattr(c, k) is not None]
        return Call(out=self.run_dir, overrides=tuple(overrides), plugins=tuple(plugins))


def runs_of(cells: list[Cell], seeds: list[int], root: pathlib.Path, threads: int | None) -> list[Run]:
    """Every run of the comparison, cell by cell, seed by seed."""
    out = []
    for cell in cells:
        for seed in seeds:
            config = dataclasses.replace(copy.deepcopy(cell.config), seed=seed,
                                         threads=cell.config.threads if threads is None else threads)
            out.append(Run(cell, seed, config, root))
    return out


def assess(run: Run, host: PluginHost, *, retry_failed: bool = False) -> Run:
    """Set ``run.state`` from what is on disk: finished (kept), failed (kept unless
    ``retry_failed``), interrupted (resumed), finished with fewer epochs (trained
    further) or absent (new). A run folder trained with other settings is refused."""
    recorded = _read_failure(run.failure_file)
    has_run = run.run_dir.is_dir() and folder.holds_run(run.run_dir)
    trained: dict[str, Any] = {}
    if has_run and folder.is_run(run.run_dir):
        trained = _check_same(run, host)
    complete = has_run and folder.complete(run.run_dir)
    if complete and trained.get("epochs", run.config.epochs) >= run.config.epochs:
        run.state = FINISHED  # a finished folder is the record: a failure noted before it is outdated
    elif recorded is not None and not retry_failed:
        run.state, run.reason, run.diverged = FAILED, recorded.get("reason", ""), bool(recorded.get("diverged"))
    elif not has_run:
        run.state = NEW
    elif complete:
        run.state = EXTEND
    else:
        run.state = RESUME
    return run


def _check_same(run: Run, host: PluginHost) -> dict[str, Any]:
    """The settings the run folder was trained with, after checking that they are this run's."""
    try:
        settings, options = folder.read_config(run.run_dir)
        then = resolve(RunConfig(**settings, options=options), host)
    except (ConfigError, TypeError) as exc:
        raise UsageError(f"{run.run_dir} is part of this comparison but its {folder.CONFIG} cannot be read: {exc} "
                         f"Delete that run folder to train it again.") from None
    except FmclfError as exc:
        raise UsageError(f"{run.run_dir} was trained with settings this machine cannot run now: {exc}") from None
    now = resolve(copy.deepcopy(run.config), host)
    mine = dataclasses.asdict(now.config)
    theirs = dataclasses.asdict(then.config)
    differ = [f"{k} = {theirs[k]!r} (this command: {mine[k]!r})" for k in mine
              if k not in {*RESUMABLE, "options"} and theirs.get(k) != mine[k]]
    for target, values in now.options.items():
        if target.startswith("visualizer."):
            continue
        old = then.options.get(target, {})
        differ += [f"{target}.{k} = {old.get(k)!r} (this command: {v!r})" for k, v in values.items() if old.get(k) != v]
    if differ:
        raise UsageError(
            f"{run.run_dir} was trained with other settings than this command gives it: {'; '.join(differ)}. "
            f"Run the command that started {run.root} to continue it, or choose another --out for a new comparison."
        )
    if theirs["epochs"] > run.config.epochs:
        raise UsageError(
            f"{run.run_dir} has trained {theirs['epochs']} epochs, more than --epochs {run.config.epochs}. "
            f"Give --epochs {theirs['epochs']} (or more) to continue this comparison, or choose another --out."
        )
    return theirs


def write_settings(run: Run) -> None:
    """Write the settings a new run starts from (read back by ``fmclf run --config``)."""
    header = f"# fmclf compare: the settings of {run.name}; its run folder is {run.run_dir}\n"
    atomic.write_text(run.settings_file, run.config.to_toml(None, header))


def record_failure(run: Run, returncode: int) -> None:
    """Keep the failure (exit code, one-line reason) so the next invocation reports it."""
    run.reason, run.diverged = failure_reason(run.log, returncode)
    run.state = FAILED
    folder.write_json(run.failure_file, {"exit_code": returncode, "reason": run.reason, "diverged": run.diverged})


def forget_failure(run: Run) -> None:
    """A run that finished leaves no failure behind."""
    run.failure_file.unlink(missing_ok=True)


def _read_failure(path: pathlib.Path) -> dict[str, Any] | None:
    if not os.path.lexists(path):
        return None
    try:
        data = folder.read_json(path)
    except (OSError, ValueError):
        return {"reason": f"failed (its record {path} is unreadable)"}
    return data if isinstance(data, dict) else {"reason": "failed"}


_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z`(])")


def failure_reason(log: pathlib.Path, returncode: int) -> tuple[str, bool]:
    """The one-line reason a run failed, from its log: the first sentence of its last
    ``Error:`` line (or the last line it wrote); and whether it diverged."""
    try:
        text = atomic.read_tail(log, 2**20).decode("utf-8", errors="replace")  # the end says why it failed
        lines = [line.strip() for line in text.splitlines() if line.strip()]
    except (OSError, atomic.RefusedFile):
        lines = []
    errors = [line for line in lines if line.startswith("Error: ")]
    text = errors[-1][len("Error: "):] if errors else (lines[-1] if lines else f"exit code {returncode}")
    first = _SENTENCE_END.split(text, maxsplit=1)[0].rstrip(".")
    if len(first) > 200:
        first = first[:199] + "…"
    return first, "diverged" in first
