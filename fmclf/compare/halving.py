"""``--prune halving``: successive halving of a cell's trials, on their checkpoints.

Every trial of a cell trains the first rung's few epochs; the better half on
the validation metric is promoted and resumes from its checkpoint (``fmclf
run --resume --epochs N``) to the next rung's epochs, the other half stops
there, its run folder and checkpoint kept; and so on to the full ``--epochs``.
With T trials and E epochs there are ``min(log2 T, log2 E) + 1`` rungs; rung r
trains to ``E // 2**(R-1-r)`` epochs and keeps half its trials (at least one).
Every cell gets the same trials and the same rungs: the same budget.

Why not Optuna's SuccessiveHalvingPruner: it is the asynchronous variant
(ASHA), which decides for each trial as its report arrives, so which trials
are promoted depends on which finished first: with ``--jobs 2`` or on a
cluster the outcome would change from one invocation to the next, and a rerun
after Ctrl-C could promote others than the first time. Here a rung is decided
once every trial of it has ended, from the values recorded in the run folders
(``metrics.jsonl``'s row of the rung's epoch), so the promotions are the same
whatever the order, and a rerun reads them back instead of training anything
twice. The journal still holds every rung's value (Optuna's intermediate
values) and each stopped trial as pruned.

A run resumed with more epochs keeps the schedule it was built with (for the
epochs it started with; past its end the rate holds), so a promoted trial
with a schedule that depends on the run's length would go on at its end rate
(0 for cosine): tuning refuses ``--prune halving`` with such a schedule
(:func:`fmclf.compare.tuning.protocol_of`). Halving a scheduled updater needs
runs built for the full epochs and stopped at each rung, which ``fmclf run``
cannot do yet.
Importing this module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..numbers import is_number
from ..run import folder
from .jobs import FAILED, FINISHED, Run

PRUNERS = ("none", "halving")


@dataclass(frozen=True)
class Rung:
    """Train the rung's trials to ``epochs``; ``keep`` of them go on to the next rung."""

    epochs: int
    trials: int
    keep: int


def rungs(trials: int, epochs: int) -> list[Rung]:
    """The rungs of ``trials`` trials trained to at most ``epochs`` epochs (halving each time)."""
    count = min(int(math.log2(trials)), int(math.log2(max(1, epochs)))) + 1
    out, alive = [], trials
    for r in range(count):
        keep = alive if r == count - 1 else max(1, alive // 2)
        out.append(Rung(epochs // 2 ** (count - 1 - r), alive, keep))
        alive = keep
    return out


def value_at(run: Run, metric: str, epoch: int) -> float | None:
    """``metric`` of the run's row for ``epoch`` (None when it has none, or not a finite number)."""
    if not (run.run_dir / folder.METRICS).is_file():
        return None
    for row in folder.read_metrics(run.run_dir):
        if row.get("epoch") == epoch:
            value = row.get(metric)
            ok = is_number(value, finite=True)
            return float(value) if ok else None
    return None


def promoted(values: dict[int, float | None], keep: int, maximize: bool) -> list[int]:
    """The ``keep`` trial numbers with the best values (ties: the lower number); a trial without one last."""
    def key(number: int) -> tuple[bool, float, int]:
        v = values[number]
        return (v is None, 0.0 if v is None else (-v if maximize else v), number)

    return sorted(sorted(values, key=key)[:keep])


def climb(cells: dict[str, Sequence[Run]], ladder: Sequence[Rung], metric: str, maximize: bool,
          train: Callable[[list[Run], int], None]) -> dict[str, dict[int, dict[str, Any]]]:
    """Successive halving of each cell's trial runs (cell name -> runs), every cell rung by rung together:
    at each rung, ``train(runs, epochs)`` brings the promoted runs that lack the rung's value to its epochs
    (a run whose folder holds it is not trained again). Returns cell name -> trial number ->
    ``{"rungs": {epochs: value}, "pruned_at": epochs or None}``; after a stop, the rungs reached so far."""
    by_number = {name: {r.trial: r for r in runs if r.trial is not None} for name, runs in cells.items()}
    out = {name: {n: {"rungs": {}, "pruned_at": None} for n in found} for name, found in by_number.items()}
    alive = {name: sorted(found) for name, found in by_number.items()}
    for rung in ladder:
        values = {name: {n: value_at(by_number[name][n], metric, rung.epochs) for n in alive[name]}
                  for name in cells}
        lacking = [by_number[name][n] for name in cells for n in alive[name] if values[name][n] is None]
        train(lacking, rung.epochs)
        for name in cells:
            for n in alive[name]:
                if values[name][n] is None and by_number[name][n].state == FINISHED:
                    values[name][n] = value_at(by_number[name][n], metric, rung.epochs)
                out[name][n]["rungs"][rung.epochs] = values[name][n]
        if any(r.state not in (FINISHED, FAILED) for r in lacking):
            break  # stopped (a signal): decide nothing
        for name in cells:
            kept = promoted(values[name], rung.keep, maximize)
            for n in alive[name]:
                if n not in kept:
                    out[name][n]["pruned_at"] = rung.epochs
            alive[name] = kept
    return out
