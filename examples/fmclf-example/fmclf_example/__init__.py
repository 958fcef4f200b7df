"""fmclf-example: an MLP model, an Adam updater, a visualizer that writes a wide CSV table, a top-k
metric and a target callback.

This module is what fmclf imports for every command, so it imports no torch:
the factories import the heavy code when a run builds them.
"""

from __future__ import annotations

import pathlib

import fmclf
from fmclf.errors import OptionError

__version__ = "0.1.0"


@fmclf.hookimpl
def register_models(register):
    register("mlp", mlp)


@fmclf.hookimpl
def register_updaters(register):
    register("adam", adam)


@fmclf.hookimpl
def register_visualizers(register):
    # Not "csv": fmclf has a built-in csv visualizer, and two plugins registering one name make
    # the plain name ambiguous for everyone who installs both.
    register("history-csv", csv_metrics)


@fmclf.hookimpl
def register_metrics(register):
    register("top-k", top_k)


@fmclf.hookimpl
def register_callbacks(register):
    register("target", target)


def mlp(*, num_inputs: int, num_classes: int, hidden: int = 256, dropout: float = 0.0):
    """Multilayer perceptron (d2l 4.2): Flatten, Linear, ReLU, Dropout, Linear.

    Options:
        hidden: units in the hidden layer
        dropout: chance of zeroing each hidden unit while training (0 for none)
    """
    if hidden < 1:
        raise OptionError(f"option hidden of model 'mlp' must be at least 1, got {hidden}. The textbook uses 256.")
    if not 0.0 <= dropout < 1.0:
        raise OptionError(f"option dropout of model 'mlp' must be at least 0 and below 1, got {dropout}.")
    from .networks import MLP

    return MLP(num_inputs, num_classes, hidden=hidden, dropout=dropout)


def adam(
    *,
    params,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
):
    """Adam (torch.optim.Adam); the loss is averaged over the batch. Use a small --lr, such as 0.001.

    Options:
        betas: decay rates of the running mean and of the running square of the gradient
        eps: added to the denominator for numerical stability
        weight_decay: L2 penalty added to the gradient
        amsgrad: use the AMSGrad variant
    """
    if not all(0.0 <= b < 1.0 for b in betas):
        raise OptionError(f"option betas of updater 'adam' must be two numbers from 0 up to (not including) 1, got "
                          f"{betas}.")
    if eps <= 0 or weight_decay < 0:
        raise OptionError(f"options of updater 'adam': eps must be above 0 and weight_decay at least 0, got eps={eps}, "
                          f"weight_decay={weight_decay}.")
    import torch

    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


def csv_metrics(*, run_dir: pathlib.Path | None = None, filename: str = "history.csv", per_class: bool = True):
    """Writes chosen metrics of every finished epoch, and a column per class, to a CSV file, atomically.

    Options:
        filename: name of the CSV file inside the run folder
        per_class: add a test-accuracy column for each class
    """
    from .csv_writer import CsvMetrics

    return CsvMetrics(run_dir, filename=filename, per_class=per_class)


def top_k(*, num_classes: int, k: int = 3):
    """Top-k accuracy: the share of examples whose class is among the k largest logits.

    Options:
        k: how many of the largest logits count (1 is plain accuracy)
    """
    if not 1 <= k <= num_classes:
        raise OptionError(f"option k of metric 'top-k' must be from 1 to the {num_classes} classes, got {k}.")
    from .measures import TopK

    return TopK(k)


def target(*, monitor: str = "valid_acc", value: float = 0.85, times: int = 1):
    """Stop the run once ``monitor`` has reached ``value`` for ``times`` epochs in a row.

    Options:
        monitor: the metric to watch (a key of metrics.jsonl, higher is better)
        value: the score that is good enough
        times: epochs in a row at or above value before the run stops
    """
    if times < 1:
        raise OptionError(f"option times of callback 'target' must be at least 1, got {times}.")
    from .measures import Target

    return Target(monitor, value, times)
