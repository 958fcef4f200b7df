"""Held-out evaluation: accuracy and the confusion matrix, summed on the device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def evaluate(model: Any, batches: Any, num_classes: int, *, dataset: Any = "the data set") -> tuple[float, Any]:
    """Accuracy of ``model`` over ``batches`` and the confusion matrix
    (a ``num_classes`` square int64 tensor on the device; rows are true classes). A label out of
    range is a :class:`~fmclf.errors.DataError` naming ``dataset`` (its record, or words)."""
    import torch

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    flat = ones = None
    try:
        with torch.no_grad():
            for X, y in batches:
                pred = model(X).argmax(dim=1)
                if y.ndim == 2:  # probability targets: the most likely class is the label
                    y = y.argmax(dim=1)
                if flat is None:
                    flat = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=pred.device)
                    ones = torch.ones(len(pred), dtype=torch.int64, device=pred.device)
                elif len(ones) < len(pred):
                    ones = torch.ones(len(pred), dtype=torch.int64, device=pred.device)
                # scatter_add_, not bincount: CUDA's bincount reads the largest
                # index back to the host, a stall per batch.
                try:
                    flat.scatter_add_(0, y * num_classes + pred, ones[: len(pred)])
                except (RuntimeError, IndexError):
                    from .labels import check_batch

                    check_batch(y, dataset, "test", num_classes)  # raises when the labels are at fault
                    raise
    finally:
        if was_training:
            model.train()
    if flat is None:
        raise ValueError("the evaluation set is empty")
    confusion = flat.reshape(num_classes, num_classes)
    total = int(confusion.sum())
    return float(confusion.diagonal().sum()) / max(total, 1), confusion


def predict(model: Any, X: Any) -> Any:
    """Predicted class indices for a batch of inputs."""
    import torch

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            return model(X).argmax(dim=1)
    finally:
        if was_training:
            model.train()


def per_class_accuracy(confusion: Any, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy of each true class, from a confusion matrix."""
    rows = confusion.sum(dim=1).clamp(min=1)
    acc = (confusion.diagonal().double() / rows.double()).tolist()
    return {str(c): round(a, 6) for c, a in zip(classes, acc)}
