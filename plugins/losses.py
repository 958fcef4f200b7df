"""Losses: the textbook's naive cross-entropy and a fused, numerically stable one."""

from __future__ import annotations

import fmclf


@fmclf.hookimpl
def register_losses(register):
    register("naive", naive, help="softmax by hand (exp / row sum, no max shift), then -log p[y]; overflows as the textbook warns")
    register("fused", fused, help="log-softmax by the shifted log-sum-exp, fused with the loss; finite for any finite logits")


def naive():
    """The textbook's ``cross_entropy(softmax(o), y)``: its failures are the point."""
    from .cross_entropy import naive_cross_entropy

    return naive_cross_entropy


def fused():
    """``log sum exp(o - m) - (o_y - m)`` per row, m the row maximum."""
    from .cross_entropy import fused_cross_entropy

    return fused_cross_entropy
