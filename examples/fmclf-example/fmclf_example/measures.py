"""The example's metric and callback (the metric imports torch; the callback needs nothing)."""

from __future__ import annotations

from typing import Any

from fmclf.errors import OptionError


class TopK:
    """Top-k accuracy, counted on the device and read once in ``compute``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.hits: Any = 0
        self.seen = 0

    def update(self, logits, y) -> None:
        labels = y.argmax(dim=1) if y.ndim == 2 else y
        top = logits.topk(self.k, dim=1).indices
        self.hits = self.hits + (top == labels.unsqueeze(1)).any(dim=1).sum()
        self.seen += len(labels)

    def compute(self) -> float:
        return float(self.hits) / max(self.seen, 1)


class Target:
    """Stops the run when the monitored metric is good enough, ``times`` epochs in a row.

    Its ``state_dict`` keeps the streak, so a run interrupted in the middle of one
    and resumed stops after the same epoch as one that was never interrupted.
    """

    def __init__(self, monitor: str, value: float, times: int) -> None:
        self.monitor, self.value, self.times = monitor, value, times
        self.streak = 0

    def on_epoch_end(self, event) -> None:
        if self.monitor not in event.metrics:
            raise OptionError(f"callback 'target' monitors {self.monitor!r}, which this run does not record; "
                              f"it records {', '.join(k for k in event.metrics if k.startswith(('valid_', 'test_')))}.")
        score = event.metrics[self.monitor]
        self.streak = self.streak + 1 if score >= self.value else 0
        if self.streak >= self.times:
            event.control.stop(f"{self.monitor} reached {score:.4f} >= {self.value} for {self.streak} epoch(s)")

    def state_dict(self) -> dict:
        return {"streak": self.streak}

    def load_state_dict(self, state: dict) -> None:
        self.streak = int(state["streak"])
