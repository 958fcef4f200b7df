"""Running a comparison: every run of the grid that still needs work, then the
statistics, ``compare.json``, ``compare.md`` and ``curves.png``.

Continuing is the normal case: each invocation looks at ``DIR`` first, keeps
the finished runs and the failed ones (unless ``retry_failed``), resumes the
interrupted ones from their checkpoints, trains further the ones that
finished with fewer epochs than asked, and starts only what is missing.
Importing this module imports no torch (the runs import it, in their own processes).
"""

from __future__ import annotations

import copy
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__, atomic
from ..errors import Interrupted, UsageError
from ..host.loading import PluginHost
from ..run import folder
from ..run.config import RunConfig
from ..run.plan import resolve
from . import batching, curves, jobs, markdown, results
from .executor import Executor, Outcome
from .grid import Cell
from .jobs import EXTEND, FAILED, FINISHED, NEW, RESUME, Run

Echo = Callable[[str], None]


@dataclass
class Comparison:
    """What :func:`run_comparison` did and found."""

    root: pathlib.Path
    runs: list[Run]
    results: list[results.CellResult]  #: ranked, best first
    ranking: results.Ranking | None
    trained: int  #: runs this invocation started or resumed


def cpu_threads() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_run(workers: int, given: int | None = None) -> int:
    """``given``, or this machine's cores divided among ``workers`` runs (at least 1 each)."""
    return given if given is not None else max(1, cpu_threads() // max(1, workers))


def run_comparison(
    cells: Sequence[Cell], *, seeds: list[int], out: pathlib.Path, host: PluginHost, executor: Executor,
    threads: int | None = None, plugin_args: Sequence[str] = (), retry_failed: bool = False,
    rank_by: str | None = None, echo: Echo = print, command: str | None = None, batch: bool = True,
    batch_models: int | None = None,
) -> Comparison:
    """Train what the comparison in ``out`` still lacks and write its results.

    Runs that may train together do, as batched groups (:mod:`fmclf.compare.batching`; ``batch`` False:
    one by one; ``batch_models`` caps a group). Every check comes first (the settings of each cell, the runs already in
    ``out``), so bad input fails before any run starts. Raises
    :class:`~fmclf.errors.Interrupted` after Ctrl-C, once every running job has
    stopped with its checkpoint and the partial results are written.
    """
    out = pathlib.Path(out)
    _check_out(out)
    for cell in cells:  # every name and option of every cell, before anything runs
        resolve(_with_seed(cell, seeds[0]), host)
    per_run = threads_per_run(executor.workers, threads)
    runs = jobs.runs_of(list(cells), seeds, out, per_run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        clash = min(n for n in names if names.count(n) > 1)
        raise UsageError(f"two cells of this comparison get the same folder name {clash!r}; give the components names "
                         f"that differ in more than punctuation.")
    for run in runs:
        jobs.assess(run, host, retry_failed=retry_failed)
    todo = [r for r in runs if r.state in (NEW, RESUME, EXTEND)]
    _announce(runs, todo, executor.workers, per_run, out, echo)
    for path in (out / jobs.RUNS, out / jobs.JOBS):
        path.mkdir(parents=True, exist_ok=True)
    for run in todo:
        if run.state == NEW:
            jobs.write_settings(run)
    by_name = {r.name: r for r in todo}
    count = {"done": 0}
    shown = (rank_by or "test_acc").partition(":")[0]  # the metric each finished run's line shows

    def done(outcome: Outcome) -> None:
        run = by_name[outcome.job.name]
        count["done"] += 1
        head = f"[{count['done']}/{len(todo)}] {run.name}"
        if outcome.returncode == 0:
            run.state = FINISHED
            jobs.forget_failure(run)
            echo(f"{head}: finished in {outcome.seconds:.1f} s{_final(run, shown)}")
        elif outcome.returncode == 130 or outcome.returncode < 0:
            run.state = RESUME
            echo(f"{head}: stopped ({_signal_text(outcome.returncode)}); the next invocation resumes it")
        else:
            jobs.record_failure(run, outcome.returncode)
            echo(f"{head}: {'diverged' if run.diverged else 'failed'} (exit {outcome.returncode}): {run.reason} "
                 f"[log: {run.log}]")

    grouping = batching.plan_jobs(todo, host, plugin_args, out, batch=batch, max_models=batch_models)
    for line in grouping.lines:
        echo(line)
    work = grouping.jobs
    try:
        if work:
            executor.run(work, lambda outcome: batching.unfold(outcome, grouping, done))
    except Interrupted as exc:
        _finish(out, cells, runs, seeds, rank_by, len(todo), executor.workers, per_run, command, echo)
        left = sum(1 for r in runs if r.state in (NEW, RESUME, EXTEND))
        raise Interrupted(
            f"{str(exc)[:1].upper() + str(exc)[1:]}; every stopped run keeps its checkpoint, and "
            f"{out / results.COMPARE_JSON} holds the {len(runs) - left} run(s) done so far. Run the same command "
            f"again to continue: it keeps the finished runs, resumes the stopped ones and trains the {left} left."
        ) from None
    return _finish(out, cells, runs, seeds, rank_by, len(todo), executor.workers, per_run, command, echo)


def _with_seed(cell: Cell, seed: int) -> RunConfig:
    config = copy.deepcopy(cell.config)
    config.seed = seed
    return config


def _check_out(out: pathlib.Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a folder. Choose another --out.")
    if out.is_dir() and folder.holds_run(out):
        raise UsageError(f"--out {str(out)!r} holds a run, not a comparison. Choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not any((out / n).exists()
                                                       for n in (jobs.RUNS, jobs.JOBS, results.COMPARE_JSON)):
        raise UsageError(
            f"--out {str(out)!r} already holds other files. A comparison goes into a new or empty folder, or one "
            f"an earlier `fmclf compare` wrote (to continue it)."
        )


def _announce(runs: list[Run], todo: list[Run], workers: int, per_run: int, out: pathlib.Path, echo: Echo) -> None:
    states = {s: sum(1 for r in runs if r.state == s) for s in (FINISHED, FAILED, RESUME, EXTEND, NEW)}
    kept = [f"{states[FINISHED]} finished" if states[FINISHED] else "",
            f"{states[FAILED]} failed" if states[FAILED] else ""]
    work = [f"{states[RESUME]} to resume" if states[RESUME] else "",
            f"{states[EXTEND]} to train further" if states[EXTEND] else "",
            f"{states[NEW]} new" if states[NEW] else ""]
    text = ", ".join(p for p in kept + work if p)
    if todo:
        echo(f"{len(runs)} runs in {out} ({text}); training {len(todo)}, {min(workers, len(todo))} at a time, "
             f"{per_run} CPU thread(s) each; each run's output goes to {out / jobs.JOBS}/NAME.log")
    else:
        echo(f"{len(runs)} runs in {out} ({text}); nothing to train")
    others = sorted(p.name for p in (out / jobs.RUNS).glob("*") if p.is_dir()) if (out / jobs.RUNS).is_dir() else []
    strays = [n for n in others if n not in {r.name for r in runs}]
    if strays:
        echo(f"note: {len(strays)} run folder(s) in {out / jobs.RUNS} are not part of this grid and are left out: "
             f"{', '.join(strays[:5])}"
             + (" ..." if len(strays) > 5 else ""))


def _final(run: Run, key: str) -> str:
    rows = folder.read_metrics(run.run_dir)
    if not rows:
        return ""
    value = rows[-1].get(key)
    return f", {key} {value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _signal_text(returncode: int) -> str:
    if returncode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return "interrupted, checkpoint written"


def _finish(out: pathlib.Path, cells: Sequence[Cell], runs: list[Run], seeds: list[int], rank_by: str | None,
            trained: int, workers: int, per_run: int, command: str | None, echo: Echo) -> Comparison:
    found = results.collect(cells, runs)
    ranking = results.Ranking.parse(rank_by, results.metric_names(found))
    ranked = results.rank(found, ranking)
    epochs = runs[0].config.epochs if runs else 0
    extra: dict[str, Any] = {"epochs": epochs, "jobs": workers, "threads_per_run": per_run, "command": command,
                             "fmclf": __version__}
    doc = results.to_json(ranked, ranking, root=out, seeds=seeds, extra=extra)
    folder.write_json(out / results.COMPARE_JSON, doc)
    atomic.write_text(out / markdown.COMPARE_MD,
                      markdown.render(ranked, ranking, seeds=seeds, epochs=epochs, command=command, root=out))
    written = [results.COMPARE_JSON, markdown.COMPARE_MD]
    try:
        curves.write(ranked, out / curves.CURVES)
        written.append(curves.CURVES)
    except Exception as exc:  # the numbers are written; only the picture is missing
        echo(f"Warning: could not draw {curves.CURVES} ({type(exc).__name__}: {exc}); compare.json and compare.md are "
             f"complete.")
    echo(f"wrote {', '.join(str(out / w) for w in written)}")
    return Comparison(out, runs, ranked, ranking, trained)
