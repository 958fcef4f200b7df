"""Predicted classes and per-class accuracy (a run's held-out evaluation is in heldout.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
