"""Running a comparison: every run of the grid that still needs work, then the
statistics, ``compare.json``, ``compare.md`` and ``curves.png``.

Continuing is the normal case: each invocation looks at ``DIR`` first, keeps
the finished runs and the failed ones (unless ``retry_failed``), resumes the
interrupted ones from their checkpoints, trains further the ones that
finished with fewer epochs than asked, and starts only what is missing.
Importing this module imports no torch (the runs import it, in their own processes).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, atomic
from ..errors import FmclfError, Interrupted, UsageError, said
from ..host.loading import PluginHost
from ..numbers import is_number
from ..run import folder, lock
from ..run.config import RunConfig
from ..run.plan import resolve
from ..run.threads import usable_cpus
from ..wording import Echo
from . import autoseeds, batching, curves, dryrun, halving, jobs, markdown, results, scores, tuning
from .executor import STOPPED, Executor, Outcome
from .grid import MAX_RUNS, Cell, seeds_from
from .jobs import EXTEND, FAILED, FINISHED, NEW, RESUME, Run


@dataclass
class Comparison:
    """What :func:`run_comparison` did and found."""

    root: pathlib.Path
    runs: list[Run]
    results: list[results.CellResult]  #: ranked, best first
    ranking: results.Ranking | None
    trained: int  #: runs this invocation started or resumed
    failed: list[str] = field(default_factory=list)  #: "RUN: reason" of every failed run (see :func:`failures`)


class RunsFailed(FmclfError):
    """Some runs of the comparison failed: the results of the others are written (exit code 1)."""


def failures(runs: Sequence[Run], tuned: dict[str, Any] | None) -> list[str]:
    """``"RUN: reason"`` for each reported run that failed or diverged, each tuning trial that failed
    without diverging (a bug, not a rate too large: a diverged trial is one answer of the search), and
    each cell whose trials all failed."""
    out = [f"{r.name}: {r.reason}" for r in runs if r.state == FAILED]
    for cell, record in (tuned or {}).items():
        out += [f"{cell}-trial{t['number']}: {t.get('reason', '')}" for t in record["trials"]
                if t.get("state") == "fail" and not t.get("diverged") and t.get("reason")]
        if record.get("chosen") is None and all(t.get("state") in ("complete", "fail") for t in record["trials"]):
            out.append(f"{cell}: every trial failed, so it has no configuration to report")
    return out


def threads_per_run(workers: int, given: int | None = None) -> int:
    """``given``, or this machine's cores divided among ``workers`` runs (at least 1 each)."""
    return given if given is not None else max(1, usable_cpus() // max(1, workers))


def run_comparison(
    cells: Sequence[Cell], *, seeds: list[int], out: pathlib.Path, host: PluginHost, executor: Executor,
    threads: int | None = None, plugins: Sequence[str] = (), retry_failed: bool = False,
    rank_by: str | None = None, echo: Echo = print, command: str | None = None,
    protocol: tuning.Protocol | None = None, dry_run: bool = False, batch: bool = True,
    batch_models: int | None = None, auto: autoseeds.AutoSeeds | None = None,
) -> Comparison | None:
    """Train what the comparison in ``out`` still lacks and write its results.

    Every check comes first (the settings of each cell, the runs already in
    ``out``), so bad input fails before any run starts. With ``protocol``, every
    cell's trials come first and its best configuration on validation is what
    trains on ``seeds``. Runs that may train together do, as batched groups
    (:mod:`fmclf.compare.batching`; ``batch`` False: one by one; ``batch_models``
    caps a group). With ``auto``, ``seeds`` are the first round's: seeds are added
    per cell until its difference from the best is resolved or ``auto.cap`` is
    reached (:mod:`fmclf.compare.autoseeds`). ``dry_run`` prints the grid and returns None, touching
    nothing. Only one comparison writes to ``out`` at a time (a lock in it).
    Raises :class:`~fmclf.errors.Interrupted` after a signal, once every running
    job has stopped with its checkpoint and the partial results are written.
    """
    out = pathlib.Path(out)
    _check_out(out)
    for cell in cells:  # every name and option of every cell, before anything runs
        resolve(_with_seed(cell, seeds[0]), host)
    total = len(cells) * ((auto.cap if auto else len(seeds)) + (protocol.trials if protocol else 0))
    if total > MAX_RUNS:
        raise UsageError(f"this comparison has {total} runs ({len(cells)} cells), more than one command trains "
                         f"({MAX_RUNS}). Give fewer values on its axes, --seeds or --trials.")
    per_run = threads_per_run(executor.workers, threads)
    plan = _Plan(list(cells), seeds, out, host, executor, per_run, tuple(plugins), retry_failed, echo, protocol,
                 _tuning_metric(rank_by) if protocol else None, chosen=list(cells), batch=batch,
                 batch_models=batch_models, auto=auto, rank_by=rank_by)
    if dry_run:
        dryrun.show(plan.preview(), out, echo)
        if auto is not None:
            echo(f"--seeds auto: every cell starts with these {len(seeds)} seed(s); a cell whose difference from the "
                 f"best is not resolved then gets more, up to {auto.cap}.")
        return None
    out.mkdir(parents=True, exist_ok=True)
    with _one_writer(out):
        try:
            chosen = plan.tune() if protocol is not None else list(cells)
            runs = plan.train_seeds(chosen, {c.name: len(seeds) for c in chosen})
            if auto is not None:
                runs = plan.train_auto(chosen, runs)
        except Interrupted as exc:
            finals = plan.finals or jobs.runs_of(list(cells), seeds, out, per_run)  # stopped while tuning: all new
            _finish(out, cells, plan.chosen, finals, seeds, rank_by, plan.trained, executor.workers, per_run,
                    command, echo, protocol, plan.tuned, plan.auto_record)
            raise Interrupted(
                f"{said(exc)}; every stopped run keeps its checkpoint, and "
                f"{out / results.COMPARE_JSON} holds the runs done so far. Run the same command again to continue: "
                f"it keeps the finished {'trials and ' if protocol else ''}runs, resumes the stopped ones and trains "
                f"what is left."
            ) from None
        if auto is not None:
            seeds = seeds_from(seeds[0], max(plan.auto_record["cells"][c.name]["seeds"] for c in chosen) if chosen
                               else len(seeds))
        return _finish(out, cells, plan.chosen, runs, seeds, rank_by, plan.trained, executor.workers, per_run,
                       command, echo, protocol, plan.tuned, plan.auto_record)


#: The states of the runs that still need work.
TODO = (NEW, RESUME, EXTEND)


def _tuning_metric(rank_by: str | None) -> tuple[str, bool]:
    """The validation metric trials are chosen by, and whether higher is better: --rank-by's valid_ twin."""
    ranking = results.Ranking.parse(rank_by or "valid_acc", [])
    assert ranking is not None
    metric = ranking.metric
    if metric.startswith("test_"):
        metric = "valid_" + metric[len("test_"):]
    if not metric.startswith("valid_"):
        raise UsageError(f"--rank-by {rank_by}: a tuned comparison chooses on a validation metric (valid_acc, "
                         f"valid_loss ...); give one of those, or its test_ twin.")
    return metric, ranking.higher_is_better


@dataclass
class _Plan:
    """One invocation's work: the runs to assess and execute, and the tuning that comes first."""

    cells: list[Cell]
    seeds: list[int]
    out: pathlib.Path
    host: PluginHost
    executor: Executor
    per_run: int
    plugins: tuple[str, ...]  #: the -p specs each job loads (NAME, no:NAME), as the command was given them
    retry_failed: bool
    echo: Echo
    protocol: tuning.Protocol | None
    metric: tuple[str, bool] | None  #: the validation metric trials are chosen by, and whether higher is better
    trained: int = 0
    finals: list[Run] = field(default_factory=list)  #: the runs reported on (the chosen configurations' seeds)
    names: set[str] = field(default_factory=set)  #: every run folder of this comparison (trials too)
    tuned: dict[str, Any] = field(default_factory=dict)  #: cell name -> its trials and chosen configuration
    chosen: list[Cell] = field(default_factory=list)  #: the cells with their chosen configurations
    batch: bool = True  #: train the runs that may train together as batched groups
    batch_models: int | None = None  #: the most members of one group (None: batching's default)
    auto: autoseeds.AutoSeeds | None = None  #: --seeds auto's rule
    rank_by: str | None = None
    auto_record: dict[str, Any] = field(default_factory=dict)  #: --seeds auto's rounds and each cell's outcome

    def train_seeds(self, chosen: list[Cell], counts: dict[str, int]) -> list[Run]:
        """Train each chosen cell on its first ``counts[name]`` seeds (what is not done yet); its runs."""
        runs = [run for c in chosen
                for run in jobs.runs_of([c], seeds_from(self.seeds[0], counts[c.name]), self.out, self.per_run)]
        _announce(runs, self.ready(runs), self.executor.workers, self.per_run, self.out, self.echo, self.names)
        self.execute(runs, (self.rank_by or "test_acc").partition(":")[0])
        return runs

    def train_auto(self, chosen: list[Cell], runs: list[Run]) -> list[Run]:
        """--seeds auto: after each round, more seeds for the cells whose difference from the best is not
        resolved, until every cell has stopped; each round and each cell's outcome go to ``auto_record``."""
        assert self.auto is not None
        counts = {c.name: len(self.seeds) for c in chosen}
        self.auto_record = {**self.auto.as_dict(), "rounds": [], "cells": {}}
        while True:
            found = results.collect(chosen, runs)
            ranked = results.rank(found, results.Ranking.parse(self.rank_by, results.metric_names(found)))
            decision = autoseeds.decide(self.auto, ranked, counts)
            self.auto_record["rounds"].append(dict(counts))
            self.auto_record["cells"] = {name: {"seeds": counts[name], "stopped": decision.stopped.get(name)}
                                         for name in counts}
            if decision.done:
                return runs
            more = {n: k for n, k in decision.counts.items() if k > counts[n]}
            self.echo(f"--seeds auto: not resolved yet, so more seeds for "
                      f"{', '.join(f'{n} ({k})' for n, k in more.items())}")
            counts = decision.counts
            runs = self.train_seeds(chosen, counts)

    def assessed(self, runs: list[Run]) -> list[Run]:
        """``runs`` with their state read from disk (every check before anything trains)."""
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            clash = min(n for n in names if names.count(n) > 1)
            raise UsageError(f"two cells of this comparison get the same folder name {clash!r}; give the components "
                             f"names that differ in more than punctuation.")
        for run in runs:
            jobs.assess(run, self.host, retry_failed=self.retry_failed)
        self.names.update(names)
        if not runs or runs[0].trial is None:
            self.finals = runs
        return runs

    def ready(self, runs: list[Run]) -> list[Run]:
        """Read ``runs``' states from disk (:meth:`assessed`) and write each new one's settings file; those
        still to train."""
        self.assessed(runs)
        for run in runs:
            if run.state == NEW:
                jobs.write_settings(run)
        return [r for r in runs if r.state in TODO]

    def trial_runs(self, trials: dict[str, list[dict[str, Any]]]) -> list[Run]:
        """The runs of every cell's trials (trial K of every cell has the same seed)."""
        assert self.protocol is not None
        runs = []
        for cell in self.cells:
            for trial in trials[cell.name]:
                config = dataclasses.replace(self.protocol.configure(cell.config, trial["params"]),
                                             seed=tuning.trial_seed(self.seeds[0], trial["number"]),
                                             threads=self.per_run)
                runs.append(Run(cell, config.seed, config, self.out, trial=trial["number"]))
        return runs

    def preview(self) -> dryrun.Preview:
        """What a dry run shows: every run, in the order it would train (trials drawn in memory)."""
        trial_runs: list[Run] = []
        if self.protocol is not None:
            studies = tuning.Studies(None, self.protocol, self.metric[1] if self.metric else True)
            trial_runs = self.trial_runs({c.name: studies.trials(c) for c in self.cells})
        runs = jobs.runs_of(self.cells, self.seeds, self.out, self.per_run)
        for run in [*trial_runs, *(runs if self.protocol is None else [])]:  # a tuned run's settings are not known
            jobs.assess(run, self.host, retry_failed=self.retry_failed)
        return dryrun.Preview(self.cells, self.seeds, trial_runs, runs, self.protocol, self.metric, self.plugins)

    def tune(self) -> list[Cell]:
        """Every cell's trials (continuing those the journal holds), then each cell with its best configuration
        on validation; a cell whose trials all failed has none and is left out of the final runs."""
        assert self.protocol is not None and self.metric is not None
        metric, maximize = self.metric
        studies = tuning.Studies(self.out, self.protocol, maximize)
        trials = {c.name: studies.trials(c) for c in self.cells}
        runs = self.trial_runs(trials)
        climbed: dict[str, Any] = {}
        try:
            if self.protocol.prune == "halving":
                climbed = self._halve(runs, metric, maximize)
            else:
                self._trials_at_once(runs, metric)
        finally:
            self.tuned = tuned = self._record(studies, trials, runs, metric, maximize, climbed)
        self.chosen = [dataclasses.replace(c, config=self.protocol.configure(c.config, tuned[c.name]["chosen"]))
                       for c in self.cells if tuned[c.name]["chosen"] is not None]
        for c in self.cells:
            if tuned[c.name]["chosen"] is None:
                self.echo(f"{c.name}: every trial failed; this cell has no configuration to report")
        return self.chosen

    def _trials_at_once(self, runs: list[Run], metric: str) -> None:
        """Every trial trained to the full epochs."""
        assert self.protocol is not None
        todo = self.ready(runs)
        self.echo(f"tuning: {len(self.cells)} cell(s) x {self.protocol.trials} trial(s) on the validation split, "
                  f"chosen by {metric}; {len(runs) - len(todo)} trial(s) done, {len(todo)} to train")
        self.execute(runs, metric)

    def _halve(self, runs: list[Run], metric: str, maximize: bool) -> dict[str, Any]:
        """Successive halving of every cell's trials (:mod:`fmclf.compare.halving`), rung by rung."""
        assert self.protocol is not None
        ladder = self.protocol.ladder()
        self.names.update(r.name for r in runs)
        self.echo(f"tuning: {len(self.cells)} cell(s) x {self.protocol.trials} trial(s) on the validation split, "
                  f"chosen by {metric}, by successive halving: "
                  + ", ".join(f"{r.trials} to {r.epochs} epoch(s)" for r in ladder))

        def train(lacking: list[Run], epochs: int) -> None:
            for run in lacking:
                run.config = dataclasses.replace(run.config, epochs=epochs)
            todo = self.ready(lacking)
            self.echo(f"rung of {epochs} epoch(s): {len(todo)} trial(s) to train")
            self.execute(lacking, metric)

        return halving.climb({c.name: [r for r in runs if r.cell.name == c.name] for c in self.cells}, ladder,
                             metric, maximize, train)

    def _record(self, studies: tuning.Studies, trials: dict[str, list[dict[str, Any]]], runs: list[Run],
                metric: str, maximize: bool, climbed: dict[str, Any]) -> dict[str, Any]:
        """Tell the studies each ended trial's validation value; each cell's trials and choice."""
        by_trial = {(r.cell.name, r.trial): r for r in runs}
        tuned: dict[str, Any] = {}
        last = self.protocol.epochs if self.protocol else 0
        for cell in self.cells:
            for trial in trials[cell.name]:
                run = by_trial[(cell.name, trial["number"])]
                trial.update(seed=run.seed, run=f"{jobs.RUNS}/{run.name}")
                rungs = climbed.get(cell.name, {}).get(trial["number"])
                if rungs is not None and run.state != FAILED:
                    self._record_rungs(studies, cell, trial, rungs, last)
                elif run.state == FINISHED:
                    value = results.final_value(run.run_dir, metric)
                    studies.tell(cell, trial["number"], value)
                    trial.update(value=value, state="complete" if value is not None else "fail")
                elif run.state == FAILED:
                    studies.tell(cell, trial["number"], None)
                    trial.update(value=None, state="fail", reason=run.reason, diverged=run.diverged)
            ended = all(t["state"] in ("complete", "fail", "pruned") for t in trials[cell.name])
            best = tuning.best(trials[cell.name], maximize) if ended else None
            tuned[cell.name] = {"metric": metric, "trials": trials[cell.name],
                                "chosen": dict(best["params"]) if best else None,
                                "chosen_trial": best["number"] if best else None}
        return tuned

    @staticmethod
    def _record_rungs(studies: tuning.Studies, cell: Cell, trial: dict[str, Any], rungs: dict[str, Any],
                      last: int) -> None:
        """A halved trial: its value at each rung; stopped at one (pruned), or complete at the last."""
        trial["rungs"] = {str(e): v for e, v in rungs["rungs"].items()}
        if rungs["pruned_at"] is not None:
            studies.prune(cell, trial["number"], rungs["rungs"])
            trial.update(value=None, state="pruned", pruned_at=rungs["pruned_at"])
        elif rungs["rungs"].get(last) is not None:
            studies.report(cell, trial["number"], rungs["rungs"])
            studies.tell(cell, trial["number"], rungs["rungs"][last])
            trial.update(value=rungs["rungs"][last], state="complete")

    def execute(self, runs: list[Run], shown: str) -> None:
        """Train the runs that need it through the executor; each one's outcome sets its state."""
        todo = [r for r in runs if r.state in TODO]
        by_name = {r.name: r for r in todo}
        count = {"done": 0}

        def done(outcome: Outcome) -> None:
            run = by_name[outcome.job.name]
            count["done"] += 1
            head = f"[{count['done']}/{len(todo)}] {run.name}"
            if outcome.returncode == 0 and folder.complete(run.run_dir):
                run.state = FINISHED
                jobs.forget_failure(run)
                self.echo(f"{head}: finished in {outcome.seconds:.1f} s{_final(run, shown)}")
            elif outcome.returncode in (0, STOPPED) or outcome.returncode < 0:  # 0 without a complete folder: cut short
                run.state = RESUME
                self.echo(f"{head}: stopped ({_signal_text(outcome.returncode)}); the next invocation resumes it")
            else:
                jobs.record_failure(run, outcome.returncode)
                self.echo(f"{head}: {'diverged' if run.diverged else 'failed'} (exit {outcome.returncode}): "
                          f"{run.reason} [log: {run.log}]")

        grouping = batching.plan_jobs(todo, self.host, self.plugins, self.out, batch=self.batch,
                                      max_models=self.batch_models)
        for line in grouping.lines:
            self.echo(line)
        self.trained += len(todo)
        if grouping.jobs:
            self.executor.run(grouping.jobs, lambda outcome: batching.unfold(outcome, grouping, done))


@contextlib.contextmanager
def _one_writer(out: pathlib.Path) -> Iterator[None]:
    """Hold the comparison folder's lock for the block: a second comparison on it is refused, naming the holder."""
    try:
        with lock.writing(out, "run a comparison in it", "choose another --out"):
            yield
    except lock.RunLocked:
        who = lock.holder(out) or {}
        raise UsageError(
            f"--out {str(out)!r} is in use by another fmclf compare (process {who.get('pid', '?')}"
            f"{', started ' + who['started'] if who.get('started') else ''}: {who.get('command', 'fmclf compare')}). "
            f"A comparison folder has one writer at a time: wait for it to end (or stop it with Ctrl-C), then run "
            f"the same command to continue, or choose another --out."
        ) from None


def _with_seed(cell: Cell, seed: int) -> RunConfig:
    return dataclasses.replace(copy.deepcopy(cell.config), seed=seed)


def _check_out(out: pathlib.Path) -> None:
    # The folders compare makes in DIR, and each run folder in runs/, are never followed as links: every file
    # written there must land in DIR (a link would carry the settings and logs elsewhere).
    for made in (out / jobs.RUNS, out / jobs.JOBS):
        if made.is_symlink():
            raise atomic.refused(made, "a symbolic link")
    if (out / jobs.RUNS).is_dir():
        for run in (out / jobs.RUNS).iterdir():
            if run.is_symlink():
                raise atomic.refused(run, "a symbolic link")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a folder. Choose another --out.")
    if out.is_dir() and folder.holds_run(out):
        raise UsageError(f"--out {str(out)!r} holds a run, not a comparison. Choose another --out.")
    if out.is_dir() and any(not folder.is_own_leftover(p.name) for p in out.iterdir()) and not any((out / n).exists()
                                                       for n in (jobs.RUNS, jobs.JOBS, results.COMPARE_JSON)):
        raise UsageError(
            f"--out {str(out)!r} already holds other files. A comparison goes into a new or empty folder, or one "
            f"an earlier `fmclf compare` wrote (to continue it)."
        )


def _announce(runs: list[Run], todo: list[Run], workers: int, per_run: int, out: pathlib.Path, echo: Echo,
              known: set[str]) -> None:
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
    strays = [n for n in others if n not in known]
    if strays:
        echo(f"note: {len(strays)} run folder(s) in {out / jobs.RUNS} are not part of this grid and are left out: "
             f"{', '.join(strays[:5])}"
             + (" ..." if len(strays) > 5 else ""))


def _final(run: Run, key: str) -> str:
    rows = folder.read_metrics(run.run_dir)
    if not rows:
        return ""
    value = rows[-1].get(key)
    return f", {key} {value:.4f}" if is_number(value) else ""


def _signal_text(returncode: int) -> str:
    if returncode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return "interrupted, checkpoint written"


def _finish(out: pathlib.Path, cells: Sequence[Cell], chosen: Sequence[Cell], runs: list[Run], seeds: list[int],
            rank_by: str | None, trained: int, workers: int, per_run: int, command: str | None, echo: Echo,
            protocol: tuning.Protocol | None = None, tuned: dict[str, Any] | None = None,
            auto_record: dict[str, Any] | None = None) -> Comparison:
    by_name = {c.name: c for c in chosen}
    found = results.collect([by_name.get(c.name, c) for c in cells], runs)
    ranking = results.Ranking.parse(rank_by, results.metric_names(found))
    ranked = results.rank(found, ranking)
    epochs = runs[0].config.epochs if runs else (cells[0].config.epochs if cells else 0)
    extra: dict[str, Any] = {"epochs": epochs, "jobs": workers, "threads_per_run": per_run, "command": command,
                             "fmclf": __version__}
    if protocol is not None:
        extra["protocol"] = {**protocol.as_dict(), "cells": tuned or {}}
    if auto_record:
        extra["seeds_auto"] = auto_record
    doc = results.to_json(ranked, ranking, root=out, seeds=seeds, extra=extra)
    folder.write_json(out / results.COMPARE_JSON, doc)
    atomic.write_text(out / markdown.COMPARE_MD,
                      markdown.render(ranked, ranking, seeds=seeds, epochs=epochs, command=command, root=out,
                                      protocol=extra.get("protocol")))
    written = [results.COMPARE_JSON, markdown.COMPARE_MD]
    pictures = [(curves.CURVES, lambda path: curves.write(ranked, path))]
    if ranking is not None:
        pictures.append((scores.SCORES, lambda path: scores.write(ranked, ranking, path, extra.get("protocol"))))
    for name, draw in pictures:
        try:
            draw(out / name)
            written.append(name)
        except Exception as exc:  # the numbers are written; only the picture is missing
            echo(f"Warning: could not draw {name} ({type(exc).__name__}: {exc}); compare.json and compare.md are "
                 f"complete.")
    echo(f"wrote {', '.join(str(out / w) for w in written)}")
    return Comparison(out, runs, ranked, ranking, trained, failures(runs, tuned))
