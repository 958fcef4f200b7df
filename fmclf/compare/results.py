"""A comparison's results: every numeric metric of every finished run, per cell,
with its statistics over the seeds and a paired comparison against the best
cell; written as ``compare.json``.

Metrics are read from the runs' ``metrics.jsonl`` generically: every numeric
key of the last epoch's row (except ``epoch`` and ``seconds``) is a metric,
so whatever a run records (a metric plugin's ``test_ece``, ``valid_loss``
...) appears here by itself. ``seconds`` becomes each run's mean seconds per
epoch. Importing this module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..numbers import is_number
from ..run import folder
from . import stats
from .grid import Cell, varying
from .jobs import FAILED, FINISHED, Run

COMPARE_JSON = "compare.json"
#: Numeric keys of metrics.jsonl that are not results: the last step's learning rate (0 at the end of a cosine
#: schedule) says nothing of the configuration; rows show the configured (or tuned) lr instead.
NOT_METRICS = {"epoch", "seconds", "lr"}
#: Metrics whose name contains one of these are better lower (unless --rank-by says otherwise).
LOWER_IS_BETTER = ("loss", "error", "ece", "nll")


@dataclass
class CellResult:
    """What one cell's runs gave."""

    cell: Cell
    runs: list[Run]
    values: dict[str, dict[int, float]] = field(default_factory=dict)  #: metric -> seed -> final value
    epoch_seconds: dict[int, float] = field(default_factory=dict)  #: seed -> mean seconds per epoch
    histories: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  #: seed -> metrics rows
    correct: dict[int, Any] = field(default_factory=dict)  #: seed -> whether each test example was right
    vs_best: stats.Paired | None = None
    vs_best_test: stats.Paired | None = None  #: on the reported test metric, when a validation one ranks

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.state == FINISHED]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if r.state == FAILED]

    @property
    def missing(self) -> list[Run]:
        return [r for r in self.runs if r.state not in (FINISHED, FAILED)]

    def summary(self, metric: str) -> stats.Summary:
        return stats.summarize([self.values.get(metric, {})[s] for s in sorted(self.values.get(metric, {}))])


@dataclass(frozen=True)
class Ranking:
    """The metric that ranks the cells, and which way is better; ``reported``: its test twin, shown
    beside it when the ranking metric is a validation one (test is never used to choose)."""

    metric: str
    higher_is_better: bool
    reported: str | None = None

    @classmethod
    def parse(cls, text: str | None, metrics: Sequence[str]) -> Ranking | None:
        """``KEY``, ``KEY:max`` or ``KEY:min`` (None: ``test_acc``, else the first metric). Where the runs
        record the key's ``valid_`` twin (a validation split), that twin ranks and the key is reported."""
        if text is None:
            if not metrics:
                return None
            text = "test_acc" if "test_acc" in metrics else metrics[0]
        key, _, way = text.partition(":")
        if way not in ("", "max", "min"):
            from ..errors import UsageError

            raise UsageError(f"--rank-by {text!r}: write METRIC, METRIC:max or METRIC:min (for example test_acc or "
                             f"test_loss:min).")
        higher = way == "max" or (way == "" and not _lower_is_better(key))
        twin = "valid_" + key[len("test_"):] if key.startswith("test_") else None
        if twin is not None and twin in metrics:
            return cls(twin, higher, key)
        return cls(key, higher)


def _lower_is_better(key: str) -> bool:
    return any(word in key for word in LOWER_IS_BETTER)


def collect(cells: Sequence[Cell], runs: Sequence[Run]) -> list[CellResult]:
    """Read every finished run's metrics, cell by cell."""
    out = []
    for cell in cells:
        result = CellResult(cell, [r for r in runs if r.cell == cell])
        for run in result.finished:
            history = folder.read_metrics(run.run_dir)
            if not history:
                continue
            result.histories[run.seed] = history
            for key, value in history[-1].items():
                if key not in NOT_METRICS and is_number(value, finite=True):
                    result.values.setdefault(key, {})[run.seed] = float(value)
            correct = folder.read_correct(run.run_dir)
            if correct is not None:
                result.correct[run.seed] = correct
            seconds = [float(row["seconds"]) for row in history if is_number(row.get("seconds"), finite=True)]
            if seconds:
                result.epoch_seconds[run.seed] = math.fsum(seconds) / len(seconds)
        out.append(result)
    return out


def metric_names(results: Sequence[CellResult]) -> list[str]:
    """Every metric some run recorded, in the order the runs record them."""
    return list(dict.fromkeys(k for r in results for k in r.values))


def rank(results: list[CellResult], ranking: Ranking | None) -> list[CellResult]:
    """Best first by the ranking metric's mean; cells without a finished run last.
    Each cell's ``vs_best`` is set: the paired comparison with the best cell."""
    if ranking is None:
        return results

    def key(r: CellResult):
        mean = r.summary(ranking.metric).mean
        return (mean is None, 0.0 if mean is None else (-mean if ranking.higher_is_better else mean))

    ordered = sorted(results, key=key)
    best = ordered[0] if ordered and ordered[0].values.get(ranking.metric) else None
    for r in ordered:
        r.vs_best = r.vs_best_test = None
        if best is not None and r is not best and r.values.get(ranking.metric):
            r.vs_best = _paired(r, best, ranking.metric)
            if ranking.reported and r.values.get(ranking.reported) and best.values.get(ranking.reported):
                r.vs_best_test = _paired(r, best, ranking.reported)
    adjusted = stats.holm([r.vs_best.p if r.vs_best is not None else None for r in ordered])
    for r, p_holm in zip(ordered, adjusted):
        if r.vs_best is not None:
            r.vs_best = dataclasses.replace(r.vs_best, p_holm=p_holm)
    return ordered


#: The metric whose per-example form the runs keep (predictions.npy), so its bootstrap resamples the examples too.
EXAMPLE_METRIC = "test_acc"


def _paired(r: CellResult, best: CellResult, metric: str) -> stats.Paired | None:
    """``r`` against ``best`` on ``metric``; for test accuracy with every shared seed's predictions kept,
    the bootstrap resamples the test examples with the seeds."""
    correct = None
    shared = sorted(set(r.values[metric]) & set(best.values[metric]))
    if metric == EXAMPLE_METRIC and shared and all(s in r.correct and s in best.correct for s in shared):
        import numpy as np

        mine, theirs = (np.stack([c.correct[s] for s in shared]) for c in (r, best))
        correct = (mine, theirs) if mine.shape == theirs.shape else None
    return stats.paired(r.values[metric], best.values[metric], correct)


def final_value(run_dir: pathlib.Path, metric: str) -> float | None:
    """``metric`` at the last epoch the run recorded (None when absent or not a finite number)."""
    rows = folder.read_metrics(run_dir)
    value = rows[-1].get(metric) if rows else None
    return float(value) if is_number(value, finite=True) else None


def to_json(results: Sequence[CellResult], ranking: Ranking | None, *, root: pathlib.Path, seeds: list[int],
            extra: dict[str, Any]) -> dict[str, Any]:
    """The document written to compare.json."""
    rows = []
    cells = [r.cell for r in results]
    for i, r in enumerate(results, start=1):
        metrics = {}
        for name in metric_names([r]):
            summary = r.summary(name)
            metrics[name] = {**summary.as_dict(), "values": [r.values[name][s] for s in sorted(r.values[name])]}
        seconds = stats.summarize([r.epoch_seconds[s] for s in sorted(r.epoch_seconds)])
        rows.append({
            "rank": i,
            "cell": r.cell.name,
            "components": r.cell.components,
            "options": r.cell.options,
            "lr": r.cell.config.lr,
            "seeds": sorted(run.seed for run in r.finished),
            "metrics": metrics,
            "epoch_seconds": {**seconds.as_dict(), "values": [r.epoch_seconds[s] for s in sorted(r.epoch_seconds)]},
            "failed": len(r.failed),
            "failures": [{"seed": run.seed, "reason": run.reason, "diverged": run.diverged,
                          "run": _rel(run.run_dir, root)}
                         for run in r.failed],
            "missing": [run.seed for run in r.missing],
            "runs": {str(run.seed): _rel(run.run_dir, root) for run in r.runs},
            "vs_best": r.vs_best.as_dict() if r.vs_best is not None else None,
            "vs_best_test": r.vs_best_test.as_dict() if r.vs_best_test is not None else None,
        })
    return {
        "rank_by": ranking.metric if ranking else None,
        "reported": ranking.reported if ranking else None,
        "higher_is_better": ranking.higher_is_better if ranking else None,
        "few_seeds": len(seeds) < stats.FEW_SEEDS,
        "axes": varying(cells),
        "seeds": seeds,
        "complete": all(not r.missing for r in results),
        **extra,
        "rows": rows,
    }


def _rel(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
