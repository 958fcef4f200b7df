"""Evaluation on a held-out split (valid or test): accuracy, loss, the confusion matrix and every metric, in one pass.

Accuracy and the run's own loss are recorded for every run (``valid_acc``, ``test_loss``, ...), as the training pass
records ``train_acc`` and ``train_loss``; the metrics of ``--metric NAME`` are recorded beside them. The logits go to
the confusion matrix and to each metric's ``update`` a chunk at a time (:data:`CHUNK`: the whole Fashion-MNIST test
set at once), a handful of calls an epoch instead of a handful per batch, and nothing is read back from the device
until :meth:`HeldOut.evaluate` computes the metrics. Under torchrun the logits and labels of every process's shard are
gathered into every process (one collective per split and epoch), so every metric agrees across processes without
knowing it is distributed, whatever state it keeps (a plain object or a ``torchmetrics.Metric``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ComponentError, DataError
from ..host.registry import ComponentRecord
from .blame import blame, blame_labels, blamed, describe, guarded
from .inputs import check_inputs
from .labels import check_batch, check_kind

#: Logits buffered before they are handed on (numbers, not bytes): 8 MB of float32.
CHUNK = 2**21


@dataclass
class Metric:
    """A metric of a run: who provides it, the key it is recorded under, the object."""

    who: ComponentRecord | str
    key: str  #: "acc" is recorded as valid_acc and test_acc; a dict result adds _KEY to it
    obj: Any


@dataclass
class Evaluated:
    """One split's evaluation."""

    values: dict[str, float | None]  #: by key without the split's prefix: {"acc": ..., "loss": ..., "ece": ...}
    confusion: Any  #: (C, C) int64 tensor on the device; rows are true classes


def _labels(y: Any) -> Any:
    return y.argmax(dim=1) if y.ndim == 2 else y  # probability targets: the most likely class


def as_values(who: ComponentRecord | str, key: str, value: Any) -> dict[str, float]:
    """A metric's ``compute()`` result as recorded values: a number (or 0-d tensor) is ``{key: v}``, a dict
    ``{key_K: v}``; anything else is that metric's fault."""
    def number(v: Any, what: str) -> float:
        if getattr(v, "ndim", 0) != 0 and getattr(v, "numel", lambda: 1)() != 1:
            raise ComponentError(
                f"{describe(who)}: compute() returned {what} of shape {tuple(v.shape)}; a metric returns a number "
                f"or a dict of numbers (return a dict to record several)."
            )
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ComponentError(f"{describe(who)}: compute() returned {what} {v!r}, which is no number; a metric "
                                 f"returns a number or a dict of numbers.") from None

    if isinstance(value, dict):
        return {f"{key}_{k}": number(v, f"{k!r}:") for k, v in value.items()}
    return {key: number(value, "a value")}


class HeldOut:
    """Evaluates ``model`` with ``metrics`` on held-out batches; ``comm`` gathers shards."""

    def __init__(self, model: Any, loss: Any, metrics: Sequence[Metric], num_classes: int, comm: Any, *,
                 who: dict[str, ComponentRecord | str] | None = None, chunk: int = CHUNK,
                 input_shape: Any = None) -> None:
        self.model, self.loss, self.metrics, self.num_classes, self.comm = model, loss, list(metrics), num_classes, comm
        who = {**{kind: blamed({}, kind) for kind in ("model", "dataset", "loss")}, **(who or {})}
        self.who_model, self.who_data, self.who_loss = who["model"], who["dataset"], who["loss"]
        self.chunk = chunk
        self.input_shape = input_shape  #: the data set's; a split of another example size is its fault
        self._kept: list[tuple[Any, Any]] = []  #: (labels, predicted classes) of the last test evaluation, on device

    def test_predictions(self) -> tuple[Any, Any] | None:
        """``(labels, predicted classes)`` of every test example at the last evaluation on the test set, as CPU
        tensors (None before any): what the run folder keeps for fmclf compare's bootstrap over test examples."""
        import torch

        if not self._kept:
            return None
        return torch.cat([y for y, _ in self._kept]).cpu(), torch.cat([p for _, p in self._kept]).cpu()

    def evaluate(self, split: str, batches: Any) -> Evaluated:
        """The metrics and confusion matrix of ``split`` ("valid", "test") over ``batches``."""
        import torch

        model, C = self.model, self.num_classes
        for m in self.metrics:
            with blame(m.who, f"in reset() before evaluating on the {split} set"):
                m.obj.reset()
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):  # only now: whatever fails from here on, the finally below puts it back
            model.eval()
        self._flat = self._loss_sum = None
        self._count = 0
        if split == "test":
            self._kept = []
        gather = self.comm.world_size > 1
        logits_in, y_in, held = [], [], 0
        try:
            with torch.no_grad():
                for X, y in guarded(batches, self.who_data, f"while yielding {split} batches"):
                    if not y_in and self._count == 0:  # the first batch: its origin before any component's fault
                        check_inputs(X, self.who_data, split, self.input_shape)
                        check_kind(y, self.who_data, split)
                    with blame(self.who_model, f"while evaluating on the {split} set"):
                        logits = model(X)
                    logits_in.append(logits)
                    y_in.append(y)
                    held += logits.numel()
                    if not gather and held >= self.chunk:
                        self._take(split, logits_in, y_in)
                        logits_in, y_in, held = [], [], 0
                if gather:
                    for logits, y in self._gathered(split, logits_in, y_in):
                        self._take(split, [logits], [y])
                elif logits_in:
                    self._take(split, logits_in, y_in)
        finally:
            if was_training:
                model.train()
        if self._flat is None:
            raise DataError(f"{describe(self.who_data)} yielded no {split} examples, so nothing can be evaluated "
                            f"on its {split} split.")
        confusion = self._flat.reshape(C, C)
        total = max(self._count, 1)
        right, loss_sum = torch.stack([confusion.diagonal().sum().double(), self._loss_sum]).tolist()  # one read
        values: dict[str, float | None] = {"loss": loss_sum / total, "acc": right / total}
        for m in self.metrics:
            with blame(m.who, f"in compute() on the {split} set"):
                computed = as_values(m.who, m.key, m.obj.compute())
            # nan or inf (a metric undefined on this split) is recorded as null, which JSON has; a bare NaN is no JSON
            values.update({k: v if math.isfinite(v) else None for k, v in computed.items()})
        return Evaluated(values, confusion)

    def _take(self, split: str, logits_in: list, y_in: list) -> None:
        """Hand a chunk to the confusion matrix and to every metric."""
        import torch

        logits = logits_in[0] if len(logits_in) == 1 else torch.cat(logits_in)
        y = y_in[0] if len(y_in) == 1 else torch.cat(y_in)
        C = self.num_classes
        with blame(self.who_model, f"while evaluating on the {split} set"):
            pred = logits.argmax(dim=1)
        if split == "test":
            self._kept.append((_labels(y), pred))
        with blame_labels(self.who_loss, f"while computing the loss on the {split} set", y, self.who_data, C, split):
            loss_sum = self.loss(logits, y).double().sum()
        if self._flat is None:
            self._flat = torch.zeros(C * C, dtype=torch.int64, device=pred.device)
            self._loss_sum = torch.zeros((), dtype=torch.float64, device=pred.device)
        self._loss_sum += loss_sum
        self._count += len(pred)
        # scatter_add_, not bincount: CUDA's bincount reads the largest index back to the host.
        try:
            self._flat.scatter_add_(0, _labels(y) * C + pred, torch.ones_like(pred))
        except (RuntimeError, IndexError):
            check_batch(y, self.who_data, split, C)  # raises when the labels are at fault
            raise
        for m in self.metrics:
            with blame(m.who, f"in update() on the {split} set"):
                m.obj.update(logits, y)

    def _gathered(self, split: str, logits_in: list, y_in: list) -> list[tuple[Any, Any]]:
        """Every process's logits and labels of ``split``, in every process, in chunks on this one's device."""
        import torch

        mine = (torch.cat(logits_in).cpu(), torch.cat(y_in).cpu()) if logits_in else None
        device = logits_in[0].device if logits_in else None
        parts = [p for p in self.comm.gather(f"gathering the {split} set's logits", mine) if p is not None]
        if not parts:
            return []
        logits, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if device is not None:
            logits, y = logits.to(device), y.to(device)
        rows = max(1, self.chunk // max(logits.shape[1] if logits.ndim == 2 else 1, 1))
        return [(logits[i * rows : (i + 1) * rows], y[i * rows : (i + 1) * rows])
                for i in range(math.ceil(len(logits) / rows))]
