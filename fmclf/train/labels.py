"""Labels outside 0..C-1 are the data set's fault: found before anything else blames a loss or a model.

A label of 10 among 10 classes, or -1, makes a loss index out of range (or, worse, silently wrap around to the last
class), and the error would name the loss. Checked three ways, none on the hot path: the whole label tensor of a
split held in tensors (:class:`fmclf.data.TensorBatches`), once, when training starts; the first batch of every other
split; and the batch in hand whenever a loss or the evaluation fails.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..host.registry import ComponentRecord
from .blame import describe


def out_of_range(y: Any, who: ComponentRecord | str, split: str, classes: int) -> DataError | None:
    """The error for a data set whose ``split`` labels ``y`` (a tensor of class indices) hold one outside
    ``0 .. classes - 1``, or None. Probability targets (floating point) have no such labels."""
    if y is None or getattr(y, "is_floating_point", lambda: True)() or not getattr(y, "numel", lambda: 0)():
        return None
    low, high = int(y.min()), int(y.max())
    label = low if low < 0 else high if high >= classes else None
    if label is None:
        return None
    return DataError(f"{describe(who)} gave a {split} label of {label}, but it has {classes} classes (len(classes)), "
                     f"so a label must be a class index from 0 to {classes - 1}. This is the data set's doing, not the "
                     f"loss's or the model's: fix its labels (or its list of classes).")


def check_splits(dataset: Any, who: ComponentRecord | str, classes: int) -> None:
    """Refuse labels out of range in every split that holds its labels in one tensor (``.y``)."""
    for split in ("train", "valid", "test"):
        labels = getattr(getattr(dataset, split, None), "y", None)
        if hasattr(labels, "is_floating_point") and labels.ndim == 1:
            check_batch(labels, who, "training" if split == "train" else split, classes)


def check_kind(y: Any, who: ComponentRecord | str, split: str) -> None:
    """Refuse labels that are neither class indices (integers, shape (N,)) nor probability targets
    (floating point, shape (N, C)): one-dimensional floats are neither, whatever a loss makes of them."""
    if hasattr(y, "is_floating_point") and y.is_floating_point() and y.ndim == 1:
        raise DataError(f"{describe(who)} gave {split} labels of dtype {y.dtype} with one dimension; labels are class "
                        f"indices, integers of shape (N,) (convert them with y.long()), or probability targets of "
                        f"shape (N, num_classes). This is the data set's doing, not the loss's or the model's.")


def check_batch(y: Any, who: ComponentRecord | str, split: str, classes: int) -> None:
    """Refuse one batch's labels of the wrong kind (see :func:`check_kind`) or out of range."""
    check_kind(y, who, split)
    if (error := out_of_range(y, who, split, classes)) is not None:
        raise error
