"""Losses: the textbook's naive cross-entropy and a fused, numerically stable one."""

from __future__ import annotations

import math
from typing import Annotated

import fmclf
from fmclf import Range
from fmclf.errors import OptionError
from fmclf.wording import option


@fmclf.hookimpl
def register_losses(register):
    register("naive", naive, help="softmax by hand (exp / row sum, no max shift), then -log p[y]; overflows as the "
                                  "textbook warns")
    register("fused", fused, help="log-softmax by the shifted log-sum-exp, fused with the loss; finite for any finite "
                                  "logits")


@fmclf.batchable()  # row-wise: a group computes every member's rows in one call
def naive():
    """The textbook's ``cross_entropy(softmax(o), y)``: its failures are the point, and its
    ``divergence_hint`` tells the user who meets one what to do."""
    from .cross_entropy import naive_cross_entropy

    return naive_cross_entropy


@fmclf.batchable(per_model=("label_smoothing", "soft_label"))
def fused(
    *,
    label_smoothing: Annotated[float, Range(0, 1)] = 0.0,
    soft_label: Annotated[float, Range(0, 1)] | None = None,
    ignore_index: int = -100,
    weight: list[Annotated[float, Range(0)]] | None = None,
    num_classes: int | None = None,
):
    """``log sum exp(o - m) - (o_y - m)`` per row, m the row maximum; options as in
    ``torch.nn.functional.cross_entropy``.

    Options:
        label_smoothing: mix the target with the uniform distribution: (1 - eps) * onehot + eps / C (0 to 1)
        soft_label: probability on the true class, the rest shared equally by the other classes (the textbook's 0.9); same as label_smoothing = (1 - p) * C / (C - 1)
        ignore_index: rows whose target is this class index get loss 0 and no gradient
        weight: one weight per class, scaling that class's term (comma-separated)
    """  # noqa: E501 - an option's help is its one line here (fmclf.host.options reads no continuation lines)
    check_fused(label_smoothing=label_smoothing, soft_label=soft_label, weight=weight, num_classes=num_classes)
    from .fused_cross_entropy import FusedCrossEntropy

    return FusedCrossEntropy(label_smoothing=label_smoothing, soft_label=soft_label, ignore_index=ignore_index,
                             weight=weight)


@fmclf.checks(fused)
def check_fused(*, label_smoothing: float = 0.0, soft_label: float | None = None, weight: list[float] | None = None,
                num_classes: int | None = None) -> None:
    """What the bounds cannot say, checked before any work (``num_classes`` comes from the data set's check)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise OptionError(f"option label_smoothing of loss 'fused' must be between 0 and 1, got {label_smoothing}.")
    if soft_label is not None:
        if not 0.0 <= soft_label <= 1.0:
            raise OptionError(f"option soft_label of loss 'fused' is a probability and must be between 0 and 1, "
                              f"got {soft_label}.")
        if label_smoothing:
            raise OptionError(
                "options soft_label and label_smoothing of loss 'fused' say the same thing two ways; give one "
                "(soft_label=p is label_smoothing=(1 - p) * C / (C - 1) for C classes)."
            )
    if weight is not None:
        if not weight:
            raise OptionError("option weight of loss 'fused' is empty; give one weight per class, "
                              f"e.g. {option('loss', 'weight', [1, 1, 2, ...])}")
        bad = [w for w in weight if not (math.isfinite(w) and w >= 0)]
        if bad:
            raise OptionError(f"option weight of loss 'fused' must hold finite weights >= 0, got {bad[0]}.")
        if num_classes is not None and len(weight) != num_classes:
            raise OptionError(
                f"option weight of loss 'fused' has {len(weight)} entries but the data set has {num_classes} "
                f"classes; give one weight per class."
            )
