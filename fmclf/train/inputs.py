"""Inputs of the wrong size are the data set's fault: found before a model or a loss trips over them.

A data set declares ``input_shape``, and the model is built for it. A split whose examples hold another number of
values (14×14 test images beside 28×28 training ones, say) makes the model fail or, worse, reshape them into a
different number of rows, and the error would name the model or the loss. Checked on the first batch of every pass
(training and each evaluation), and on the whole tensor of a split held in one (``.X``) when training starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import DataError
from ..host.registry import ComponentRecord
from ..wording import option
from .blame import describe


def check_inputs(X: Any, who: ComponentRecord | str, split: str, input_shape: Sequence[int] | None) -> None:
    """Refuse a batch ``X`` whose examples do not hold as many values as ``input_shape`` says."""
    shape = getattr(X, "shape", None)
    if input_shape is None or shape is None or len(shape) < 1:
        return
    want, got = math.prod(int(d) for d in input_shape), math.prod(int(d) for d in shape[1:])
    if got != want:
        raise DataError(
            f"{describe(who)} gave {split} examples of shape {tuple(int(d) for d in shape[1:])} ({got} values each), "
            f"but its input_shape is {tuple(int(d) for d in input_shape)} ({want} values), which the model was built "
            f"for. This is the data set's doing, not the model's or the loss's: give every split examples of one shape "
            f"(with {option('dataset', 'verify', False)} a data set's files are not checked)."
        )


def check_split_inputs(dataset: Any, who: ComponentRecord | str) -> None:
    """Refuse, when training starts, a split held in one tensor (``.X``) of the wrong example size."""
    input_shape = getattr(dataset, "input_shape", None)
    for split in ("train", "valid", "test"):
        X = getattr(getattr(dataset, split, None), "X", None)
        if hasattr(X, "shape") and hasattr(X, "ndim"):
            check_inputs(X, who, "training" if split == "train" else split, input_shape)
