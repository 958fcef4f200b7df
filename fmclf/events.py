"""What visualizers are told, and when.

A visualizer implements any of ``on_fit_start``, ``on_batch_end``,
``on_epoch_end`` and ``on_fit_end``; each receives one event object. Batch
events hold device tensors: reading ``loss`` or ``acc`` synchronises with the
device, so read them at a human rate (say ten times a second), not every batch.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any, Sequence

EVENTS = ("on_fit_start", "on_batch_end", "on_epoch_end", "on_fit_end")


@dataclass
class FitStart:
    """Training is about to start (or resume at ``start_epoch``)."""

    epochs: int
    start_epoch: int  #: first epoch this process trains, 1-based
    num_batches: int  #: training batches per epoch
    classes: Sequence[str]
    device: str
    run_dir: pathlib.Path | None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  #: epochs already done (on resume)


@dataclass
class BatchEnd:
    """One training batch is done."""

    epoch: int
    batch: int  #: 1-based index within the epoch
    num_batches: int
    examples: int  #: examples seen so far this epoch
    loss_sum: Any  #: tensor: summed loss so far this epoch
    correct: Any  #: tensor: correct predictions so far this epoch

    @property
    def loss(self) -> float:
        """Running mean training loss of this epoch (synchronises with the device)."""
        return float(self.loss_sum) / max(self.examples, 1)

    @property
    def acc(self) -> float:
        """Running training accuracy of this epoch (synchronises with the device)."""
        return float(self.correct) / max(self.examples, 1)


@dataclass
class EpochEnd:
    """One epoch is trained and evaluated; ``metrics`` is its row of metrics.jsonl."""

    epoch: int
    epochs: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


@dataclass
class FitEnd:
    """Training finished (all epochs); the final model and test confusion matrix."""

    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    confusion: list[list[int]]  #: rows: true class, columns: predicted class
    classes: Sequence[str]
    model: Any
    run_dir: pathlib.Path | None
