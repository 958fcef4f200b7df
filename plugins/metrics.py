"""Metrics: accuracy and the run's loss (every run records both), calibration error and macro F1.

Each is evaluated after every epoch on the validation split (when the data
set has one) and the test set, and recorded as ``valid_NAME`` / ``test_NAME``.
``ece`` and ``macro-f1`` are torchmetrics' own, imported only when a run asks
for them.
"""

from __future__ import annotations

from typing import Literal

import fmclf
from fmclf.errors import OptionError


@fmclf.hookimpl
def register_metrics(register):
    register("accuracy", accuracy, help="fraction of held-out examples classified right; every run records it "
                                        "(valid_acc, test_acc)")
    register("loss", loss, help="the run's loss on held-out data, the mean per example; every run records it "
                                "(valid_loss, test_loss)")
    register("ece", ece, help="expected calibration error: how far the softmax confidence is from the accuracy "
                              "(torchmetrics' MulticlassCalibrationError; 0 is perfectly calibrated)")
    register("macro-f1", macro_f1, help="F1 score of each class, averaged over the classes "
                                        "(torchmetrics' MulticlassF1Score)")


def accuracy():
    """Fraction of examples whose largest logit is their class (probability targets: their likeliest class)."""
    from .metric_objects import Accuracy

    return Accuracy()


def loss(*, loss):
    """The run's own loss, averaged over the examples (as train_loss is over the training set)."""
    from .metric_objects import MeanLoss

    return MeanLoss(loss)


def ece(*, num_classes: int, bins: int = 15, norm: Literal["l1", "l2", "max"] = "l1"):
    """Expected calibration error of the softmax probabilities (torchmetrics' MulticlassCalibrationError).

    Options:
        bins: confidence bins, equal widths over [0, 1]
        norm: l1 (the expected calibration error), l2 (its root-mean-square form), max (the maximum calibration error)
    """
    if bins < 1:
        raise OptionError(f"option bins of metric 'ece' must be at least 1, got {bins}. 15 is usual.")
    from .metric_objects import Calibration

    return Calibration(num_classes, bins=bins, norm=norm)


def macro_f1(*, num_classes: int):
    """F1 score (harmonic mean of precision and recall) of each class, averaged with equal weights."""
    from torchmetrics.classification import MulticlassF1Score

    return MulticlassF1Score(num_classes=num_classes, average="macro")
