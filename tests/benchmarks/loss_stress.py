"""The stress grid of :mod:`fmclf.compare.stress` (where it lives now, installed with
fmclf, so ``fmclf bench loss`` and plugin authors use the same cases), with the
names this suite's tests use: the three cross-entropies by name and
``measure(case, dtype, name)`` with the old result keys.

Import it as ``loss_stress`` from this folder, or as ``benchmarks.loss_stress`` from tests/.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fmclf.compare import stress
from fmclf.compare.stress import (  # noqa: F401 - re-exported for the tests
    CASES,
    DTYPE_NAMES,
    TOLERANCE_ULPS,
    Case,
    compute_eps,
    cross_entropy_reference,
    exp_overflow,
    gradient_error,
    grid,
    hash_name,
    mp_reference_loss,
    relative_error,
    run,
    tolerance,
)
from fmclf_plugins.cross_entropy import naive_cross_entropy
from fmclf_plugins.fused_cross_entropy import fused_cross_entropy

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
reference = cross_entropy_reference


def torch_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch's own, per example."""
    return F.cross_entropy(logits, y, reduction="none")


#: The three losses every comparison runs, by the names the table uses.
LOSSES: dict[str, Callable] = {"naive": naive_cross_entropy, "fused": fused_cross_entropy, "torch": torch_cross_entropy}


def measure(case: Case, dtype: str, loss_name: str) -> dict:
    """One loss on one case against the cross-entropy reference: its loss and gradient
    errors (relative), and how many rows (entries) of its loss (gradient) went inf or nan."""
    r = stress.measure(case, dtype, LOSSES[loss_name], cross_entropy_reference, kind=stress.REFERENCE_CROSS_ENTROPY)
    return {
        "case": case.name,
        "dtype": dtype,
        "loss": loss_name,
        "loss_error": math.inf if r.loss_error is None else r.loss_error,
        "grad_error": math.inf if r.grad_error is None else r.grad_error,
        "loss_nonfinite": r.loss_inf + r.loss_nan,  # one value per row: a row is inf or nan, not both
        "loss_nan": r.loss_nan,
        "grad_nonfinite": -1 if r.grad_failed else r.grad_inf + r.grad_nan,
        "rows": r.rows,
    }

