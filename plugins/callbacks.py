"""Callbacks: early stopping, and keeping the best weights.

Both watch one recorded metric (``monitor``, a key of metrics.jsonl such as
``valid_loss`` or ``valid_acc``) and keep what they have seen in their
``state_dict``, so a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import pathlib
from typing import Literal

import fmclf
from fmclf.errors import OptionError

Mode = Literal["auto", "min", "max"]


@fmclf.hookimpl
def register_callbacks(register):
    register("early-stop", early_stop, help="stop the run when a monitored metric has not improved for `patience` "
                                            "epochs (default: valid_loss)")
    register("best", best, help="keep the weights of the best epoch by a monitored metric in best.pt "
                                "(`fmclf predict RUN --weights best` uses them)")


def early_stop(*, monitor: str = "valid_loss", patience: int = 3, mode: Mode = "auto", min_delta: float = 0.0):
    """Stop the run once ``monitor`` has gone ``patience`` epochs without improving by more than ``min_delta``.

    Options:
        monitor: the metric to watch, a key of metrics.jsonl (valid_loss needs -o dataset.valid=F)
        patience: epochs without improvement before the run stops
        mode: min (lower is better), max, or auto (from the name: losses and errors min, accuracies and F1 max)
        min_delta: how much better than the best so far a value must be to count as an improvement
    """
    if patience < 1:
        raise OptionError(f"option patience of callback 'early-stop' must be at least 1 (epochs), got {patience}.")
    if not min_delta >= 0:
        raise OptionError(f"option min_delta of callback 'early-stop' must be 0 or more, got {min_delta}.")
    from .callback_objects import EarlyStopping, Monitor

    return EarlyStopping(Monitor("early-stop", monitor, mode, min_delta), patience)


def best(*, run_dir: pathlib.Path | None = None, monitor: str = "valid_loss", mode: Mode = "auto"):
    """Save the model's weights to RUN_DIR/best.pt, atomically, each time ``monitor`` reaches a new best.

    Options:
        monitor: the metric to watch, a key of metrics.jsonl (valid_loss needs -o dataset.valid=F)
        mode: min (lower is better), max, or auto (from the name: losses and errors min, accuracies and F1 max)
    """
    if run_dir is None:
        raise OptionError("callback 'best' writes best.pt into the run folder, and it was given none (run_dir=None).")
    from .callback_objects import BestWeights, Monitor

    return BestWeights(pathlib.Path(run_dir), Monitor("best", monitor, mode, 0.0))
