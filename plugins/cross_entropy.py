"""The textbook's cross-entropy (d2l 3.6), kept as it is written there: its failures are the point.

``softmax`` exponentiates the logits without subtracting their maximum, so a
logit past ~88.7 (float32; 11.1 in float16) overflows to inf and the row
becomes nan; a target whose logit sits ~104 below the row's largest
underflows to probability 0 and its loss to inf. ``docs/stability.md``
measures where; the ``fused`` loss (:mod:`.fused_cross_entropy`) does not fail.
"""

from __future__ import annotations

import torch

from fmclf.wording import flag


def softmax(O: torch.Tensor) -> torch.Tensor:  # noqa: E741 - O: the textbook's name for the outputs
    """The textbook's softmax: exp, row sum, divide. No max subtraction."""
    O_exp = torch.exp(O)
    partition = O_exp.sum(1, keepdim=True)
    return O_exp / partition


def naive_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``-log softmax(logits)[y]``: inf or nan once exp overflows or underflows.

    Probability targets (N, C) get the textbook's general form ``-sum_j y_j log y_hat_j``.
    """
    y_hat = softmax(logits)
    if y.is_floating_point():
        return -(y * torch.log(y_hat)).sum(1)
    return -torch.log(y_hat[torch.arange(len(y_hat), device=y_hat.device), y])


def _naive_hint() -> str:
    """What the engine's divergence message advises (DESIGN.md's loss contract: ``divergence_hint``),
    in the words of the front end that runs it."""
    return ("The naive loss exponentiates logits without subtracting their maximum and "
            f"overflows when they grow; use {flag('loss', 'fused')}, or a smaller {flag('lr')}.")


naive_cross_entropy.divergence_hint = _naive_hint  # type: ignore[attr-defined]
