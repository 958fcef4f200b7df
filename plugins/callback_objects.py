"""The callback objects behind plugins/callbacks.py."""

from __future__ import annotations

import math
import pathlib
from typing import Any

from fmclf.errors import OptionError
from fmclf.host.registry import did_you_mean
from fmclf.numbers import is_number
from fmclf.run import folder
from fmclf.wording import flag, option

#: How ``mode = "auto"`` reads a metric's name: the last word decides.
LOWER_IS_BETTER = ("loss", "ece", "error", "err")
HIGHER_IS_BETTER = ("acc", "accuracy", "f1")
SPLITS = ("train", "valid", "test")


def _mode(monitor: str, mode: str, who: str) -> str:
    if mode != "auto":
        return mode
    words = monitor.replace("-", "_").lower().split("_")
    if any(w in LOWER_IS_BETTER for w in words[-2:]):
        return "min"
    if any(w in HIGHER_IS_BETTER for w in words[-2:]):
        return "max"
    raise OptionError(
        f"callback {who!r} cannot tell from the name whether a larger {monitor!r} is better; "
        f"say so with {option(f'callback.{who}', 'mode', 'min')} (lower is better) or mode=max."
    )


class Monitor:
    """One recorded metric, watched for improvements: the best value so far and its epoch."""

    def __init__(self, who: str, key: str, mode: str, min_delta: float) -> None:
        split = key.split("_", 1)[0]
        if split not in SPLITS or "_" not in key:
            raise OptionError(
                f"option monitor of callback {who!r} must name a recorded metric such as valid_loss, valid_acc or "
                f"test_NAME (train_, valid_ or test_, then the metric), got {key!r}."
            )
        self.who, self.key, self.min_delta = who, key, min_delta
        self.mode = _mode(key, mode, who)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def check_splits(self, event) -> None:
        """At fit start: a valid_ metric needs a validation split; a test_ one beside one is warned of."""
        split = self.key.split("_", 1)[0]
        if split == "valid" and "valid" not in event.splits:
            raise OptionError(
                f"callback {self.who!r} monitors {self.key!r}, but this data set has no validation split, so nothing "
                f"is recorded under that name. Hold one out with {option('dataset', 'valid', 0.1)} (a tenth of the "
                f"training set), "
                f"or monitor test_{self.key.split('_', 1)[1]} knowing that the test set then takes part in training."
            )
        if split == "test" and "valid" in event.splits:
            event.control.warn(
                f"it monitors {self.key!r} although the run has a validation split: the test set then decides when "
                f"training stops, and its scores are no longer held out. Monitor valid_{self.key.split('_', 1)[1]}."
            )

    def value(self, metrics: dict[str, Any]) -> float:
        """This epoch's value; an absent key is an error listing the recorded ones."""
        if self.key not in metrics:
            keys = [k for k, v in metrics.items() if is_number(v) and k.startswith(SPLITS)]
            hint = did_you_mean(self.key, keys)
            raise OptionError(
                f"callback {self.who!r} monitors {self.key!r}, which this run does not record.{hint} It records: "
                f"{', '.join(keys)} (add a metric with {flag('metrics', 'NAME')})."
            )
        return float(metrics[self.key])

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta`` (nan never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def take(self, value: float, epoch: int) -> None:
        self.best, self.best_epoch = value, epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class EarlyStopping:
    """Stops the run after ``patience`` epochs without an improvement of the monitored metric."""

    def __init__(self, monitor: Monitor, patience: int) -> None:
        self.monitor, self.patience = monitor, patience
        self.wait = 0  #: epochs since the last improvement

    def on_fit_start(self, event) -> None:
        self.monitor.check_splits(event)

    def on_epoch_end(self, event) -> None:
        m = self.monitor
        value = m.value(event.metrics)
        if m.improved(value):
            m.take(value, event.epoch)
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            delta = f" by more than {m.min_delta:g}" if m.min_delta else ""
            best = "no epoch" if m.best is None else f"{m.best:.4f} (epoch {m.best_epoch})"
            event.control.stop(f"{m.key} has not improved{delta} on {best} for {self.wait} epoch(s) "
                               f"(patience {self.patience}, mode {m.mode})")

    def state_dict(self) -> dict[str, Any]:
        return {**self.monitor.state_dict(), "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state)
        self.wait = int(state["wait"])


class BestWeights:
    """Writes the model's state_dict to best.pt (atomically) whenever the monitored metric reaches a new best."""

    FILE = folder.BEST

    def __init__(self, run_dir: pathlib.Path, monitor: Monitor) -> None:
        self.path = run_dir / self.FILE
        self.monitor = monitor

    def on_fit_start(self, event) -> None:
        self.monitor.check_splits(event)

    def on_epoch_end(self, event) -> None:
        m = self.monitor
        value = m.value(event.metrics)
        if m.improved(value):
            from fmclf.run.checkpoint import save_torch

            save_torch(self.path, event.model.state_dict())
            m.take(value, event.epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state)
