"""What visualizers and callbacks are told, and when (docs/plugins.md, "register_visualizers" and
"register_callbacks", says it for plugin authors).

A visualizer or a callback implements any of :data:`EVENTS`; each receives one event object, which carries
``control``: a callback may stop the run or change its learning rate through it (a visualizer shows and does not
steer). Batch events hold device tensors: reading ``loss`` or ``acc`` synchronises with the device. Callbacks hear
each event before visualizers do, and their ``on_epoch_end`` runs before the checkpoint is written (what they
decide and keep in ``state_dict()`` is saved with it), visualizers' after it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ComponentError
from .numbers import is_number
from .wording import flag

EVENTS = ("on_fit_start", "on_batch_end", "on_epoch_end", "on_fit_end", "on_exception")

#: What ``ExceptionRaised.cause`` says stopped the run.
CAUSES = ("interrupt", "divergence", "fault")

#: The events in which a callback may change the learning rate: between epochs, where every process agrees on it.
LR_EVENTS = ("on_fit_start", "on_epoch_end")


class Control:
    """How a callback steers the run: ``stop(reason)`` ends it after the current epoch.

    The run then exits 0 with its final weights, summary and report, which say who stopped it (``stopped_by``),
    why (``reason``) and after which epoch (``epoch``); the first stop asked for is kept. ``warn(text)`` prints a
    warning naming the component that calls it. ``set_lr(value)`` and ``scale_lr(factor)`` change the learning
    rate, only between epochs (:data:`LR_EVENTS`), where every process agrees on it: rank 0's request is applied on
    every process before the checkpoint is written, as one factor on every rate the updater holds, so a schedule
    keeps its shape (see :func:`fmclf.train.updaters.change_lr`).
    """

    def __init__(self, warn: Callable[[str], None] | None = None) -> None:
        self.stopped_by: str | None = None  #: "callback 'early-stop' (fmclf 0.1.0)"
        self.reason: str | None = None
        self.epoch: int | None = None  #: the epoch after which the run stops
        self._warn = warn
        self._caller: Any = None  #: (kind, who): set by the engine around each call
        self._event: str | None = None  #: the event being told, set by the engine around each call
        self._at = 0  #: the epoch in progress, set by the engine
        self._lr: tuple[str, float, str] | None = None  #: a rate change asked for: see take_lr

    def _steering(self, call: str) -> str:
        """Who calls ``call``: refused unless a callback does."""
        kind, who = self._caller or ("callback", "a callback")
        if kind != "callback":
            raise ComponentError(
                f"{who} called control.{call}, but a {kind} shows and does not steer. Register it "
                f"with register_callbacks (and choose it with {flag('callbacks')}) to let it steer a run."
            )
        return who

    def stop(self, reason: str) -> None:
        """End the run after the current epoch, for ``reason`` (a sentence the summary shows)."""
        who = self._steering(f"stop({reason!r})")
        if self.stopped_by is None:
            self.stopped_by, self.reason, self.epoch = who, str(reason).strip() or "no reason given", self._at

    def set_lr(self, value: float) -> None:
        """Train at learning rate ``value`` from the next epoch on (see the class's note)."""
        self._ask_lr("set", value)

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate by ``factor`` from the next epoch on (``0.1`` divides it by ten)."""
        self._ask_lr("scale", factor)

    def _ask_lr(self, how: str, number: Any) -> None:
        call = f"{how}_lr({number!r})"
        who = self._steering(call)
        if not (is_number(number, finite=True) and number > 0):
            raise ComponentError(f"{who} called control.{call}; it takes a finite number above 0.")
        if self._event is not None and self._event not in LR_EVENTS:
            raise ComponentError(f"{who} called control.{call} in {self._event}; the rate changes between epochs, "
                                 f"where every process agrees on it: call it in {' or '.join(LR_EVENTS)}.")
        if how == "scale" and self._lr is not None:  # after another request in the same event: composed
            how, number = self._lr[0], self._lr[1] * number
        self._lr = (how, float(number), who)

    def take_lr(self) -> tuple[str, float, str] | None:
        """The learning-rate change asked for since the last call, ``("set", value, who)`` or ``("scale", factor,
        who)``, or None; the engine applies it (see :func:`fmclf.train.updaters.change_lr`)."""
        request, self._lr = self._lr, None
        return request

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
        return None if self.stopped_by is None else {"by": self.stopped_by, "reason": self.reason, "epoch": self.epoch}

    def restore(self, record: dict[str, Any] | None) -> None:
        """Take back a :meth:`record` (from a checkpoint, or from rank 0)."""
        record = record or {"by": None, "reason": None, "epoch": None}
        self.stopped_by, self.reason, self.epoch = record["by"], record["reason"], record["epoch"]


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
    """Training stopped on an error: Ctrl-C or SIGTERM (``cause`` "interrupt"), an inf or nan loss or weights
    ("divergence"), or a component that raised ("fault"). The error is raised again once every listener heard it;
    close files here, do not raise."""

    error: BaseException
    epoch: int | None  #: the epoch in progress (1-based), None before the first
    batch: int | None  #: the training batch in progress, None outside the training pass
    cause: str  #: one of CAUSES
    run_dir: pathlib.Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  #: the epochs finished
    control: Control = field(default_factory=Control)
