"""The metric objects behind plugins/metrics.py (these import torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _labels(y: torch.Tensor) -> torch.Tensor:
    return y.argmax(dim=1) if y.ndim == 2 else y  # probability targets: the likeliest class


class Accuracy:
    """Right predictions over examples, counted on the device and read once in ``compute``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.right: Any = 0
        self.total = 0

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.right = self.right + (logits.argmax(dim=1) == _labels(y)).sum()
        self.total += len(logits)

    def compute(self) -> float:
        return float(self.right) / max(self.total, 1)


class MeanLoss:
    """The mean of a per-example loss, summed in float64 on the device."""

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.loss = loss
        self.reset()

    def reset(self) -> None:
        self.sum: Any = 0.0
        self.total = 0

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            self.sum = self.sum + self.loss(logits, y).double().sum()
        self.total += len(logits)

    def compute(self) -> float:
        return float(self.sum) / max(self.total, 1)


class Calibration:
    """torchmetrics' MulticlassCalibrationError fed softmax probabilities.

    Given logits, torchmetrics applies the softmax only when some value lies
    outside [0, 1]; logits that happen to lie inside would be taken for
    probabilities. So the softmax is applied here, always.
    """

    def __init__(self, num_classes: int, *, bins: int, norm: str) -> None:
        from torchmetrics.classification import MulticlassCalibrationError

        # fmclf gives every process the whole split, so torchmetrics must not add the processes up again
        self.metric = MulticlassCalibrationError(num_classes=num_classes, n_bins=bins, norm=norm,
                                                 sync_on_compute=False)

    def reset(self) -> None:
        self.metric.reset()

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        if self.metric.device != logits.device:
            self.metric.to(logits.device)
        self.metric.update(logits.float().softmax(dim=1), _labels(y))

    def compute(self) -> float:
        return float(self.metric.compute())
