"""What visualizers and callbacks are told, and when.

A visualizer or a callback implements any of ``on_fit_start``,
``on_batch_end``, ``on_epoch_end``, ``on_fit_end`` and ``on_exception``; each
receives one event object. Every event carries ``control``: a callback may
call ``event.control.stop(reason)`` to end the run cleanly after the current
epoch (a visualizer shows and does not steer). Batch events hold device
tensors: reading ``loss`` or ``acc`` synchronises with the device, so read
them at a human rate (say ten times a second), not every batch.

Callbacks hear each event before visualizers do, so a visualizer sees the
stop a callback asked for in the same event. After an epoch, callbacks'
``on_epoch_end`` runs before the checkpoint is written (what they decide and
keep in ``state_dict()`` is saved with it), visualizers' after it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

EVENTS = ("on_fit_start", "on_batch_end", "on_epoch_end", "on_fit_end", "on_exception")

#: What ``ExceptionRaised.cause`` says stopped the run.
CAUSES = ("interrupt", "divergence", "fault")


class Control:
    """How a callback steers the run: ``stop(reason)`` ends it after the current epoch.

    The run then exits 0 with its final weights, summary and report, which say
    who stopped it (``stopped_by``), why (``reason``) and after which epoch
    (``epoch``). The first stop asked for is the one kept. ``warn(text)`` prints
    a warning naming the component that calls it.
    """

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.stopped_by: str | None = None  #: "callback 'early-stop' (fmclf 0.1.0)"
        self.reason: str | None = None
        self.epoch: int | None = None  #: the epoch after which the run stops
        self._warn = warn
        self._caller: Any = None  #: (kind, who): set by the engine around each call
        self._at = 0  #: the epoch in progress, set by the engine

    def stop(self, reason: str) -> None:
        """End the run after the current epoch, for ``reason`` (a sentence the summary shows)."""
        from .errors import ComponentError

        kind, who = self._caller or ("callback", "a callback")
        if kind != "callback":
            raise ComponentError(
                f"{who} called control.stop({reason!r}), but a {kind} shows and does not steer. Register it "
                f"with register_callbacks (and choose it with --callback) to let it stop a run."
            )
        if self.stopped_by is None:
            self.stopped_by, self.reason, self.epoch = who, str(reason).strip() or "no reason given", self._at

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self.stopped_by is not None

    def warn(self, text: str) -> None:
        """Print ``text`` as a warning naming the component that calls this."""
        who = (self._caller or (None, "a component"))[1]
        if self._warn is not None:
            self._warn(f"Warning: {who}: {text}")

    def record(self) -> dict[str, Any] | None:
        """What summary.json keeps: ``{"by", "reason", "epoch"}``, or None."""
        if self.stopped_by is None:
            return None
        return {"by": self.stopped_by, "reason": self.reason, "epoch": self.epoch}

    def restore(self, record: dict[str, Any] | None) -> None:
        """Take back a :meth:`record` (from a checkpoint, or from rank 0)."""
        if record:
            self.stopped_by, self.reason, self.epoch = record["by"], record["reason"], record["epoch"]
        else:
            self.stopped_by = self.reason = self.epoch = None


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
    control: Control = field(default_factory=Control)
    splits: tuple[str, ...] = ("test",)  #: the held-out splits evaluated each epoch: ("valid", "test") or ("test",)


@dataclass
class BatchEnd:
    """One training batch is done."""

    epoch: int
    batch: int  #: 1-based index within the epoch
    num_batches: int
    examples: int  #: examples seen so far this epoch
    loss_sum: Any  #: tensor: summed loss so far this epoch
    correct: Any  #: tensor: correct predictions so far this epoch
    control: Control = field(default_factory=Control)

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
    model: Any = None  #: the live model: read it (or save a copy), do not replace it
    lr: float | None = None  #: the learning rate of the epoch's last step
    control: Control = field(default_factory=Control)


@dataclass
class FitEnd:
    """Training finished (all epochs, or stopped by a callback); the final model and test confusion matrix."""

    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    confusion: list[list[int]]  #: rows: true class, columns: predicted class
    classes: Sequence[str]
    model: Any
    run_dir: pathlib.Path | None
    control: Control = field(default_factory=Control)


@dataclass
class ExceptionRaised:
    """Training stopped on an error: Ctrl-C or SIGTERM (``cause`` "interrupt"), an inf or nan
    loss or weights ("divergence"), or a component that raised ("fault"). The error is
    raised again once every listener heard it; close files here, do not raise."""

    error: BaseException
    epoch: int | None  #: the epoch in progress (1-based), None before the first
    batch: int | None  #: the training batch in progress, None outside the training pass
    cause: str  #: one of CAUSES
    run_dir: pathlib.Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  #: the epochs finished
    control: Control = field(default_factory=Control)
