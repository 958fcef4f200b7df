"""Stress cases for cross-entropy, an exact reference, and how far a loss is from it.

Shared by the proof tests (tests/test_fused_loss_proof.py), the ``stability``
benchmark group and ``stability_table.py``, so the table in docs/stability.md
and the tests measure the same thing. Import it as ``loss_stress`` from this
folder, or as ``benchmarks.loss_stress`` from tests/.

The reference is computed in float64 from the logits *as stored* in their
dtype (so it is exact for float32, float16 and bfloat16 inputs to about
1e-16), by the same shifted formula but with every step in float64 and the
sums as ``math.fsum``-grade float64 sums. For float64 inputs it is a float64
computation (a few ulps), checked against mpmath in tests/test_loss_reference.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fmclf_plugins.cross_entropy import naive_cross_entropy
from fmclf_plugins.fused_cross_entropy import fused_cross_entropy

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: Where exp overflows in each dtype (ln of the largest finite value).
EXP_OVERFLOW = {name: math.log(torch.finfo(dt).max) for name, dt in DTYPES.items()}

#: The tolerance of the proof: fused's error may exceed torch's by at most this
#: many units in the last place of the dtype fused computes in (float32 for the
#: 16-bit dtypes), plus, for the gradient, one rounding to the logits' dtype.
TOLERANCE_ULPS = 16


def compute_eps(dtype: torch.dtype) -> float:
    """Machine epsilon of the dtype the fused loss computes in for ``dtype``."""
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def tolerance(dtype: torch.dtype, what: str) -> float:
    """The stated tolerance for ``what`` ("loss" or "grad") in ``dtype``."""
    tol = TOLERANCE_ULPS * compute_eps(dtype)
    if what == "grad" and dtype in (torch.float16, torch.bfloat16):
        tol += torch.finfo(dtype).eps  # the gradient is returned in the logits' dtype
    return tol


# -- the reference ------------------------------------------------------------------


def reference(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (float64) per-row loss and gradient ``softmax - onehot`` for class
    targets ``y`` and logits whose row maxima are finite."""
    o = logits.detach().double().cpu()
    y = y.cpu()
    m = o.amax(dim=1, keepdim=True)
    z = o - m  # exact: the inputs have at most 53 significant bits
    k = z.argmax(dim=1, keepdim=True)
    e = torch.exp(z)
    e.scatter_(1, k, 0.0)  # leave out the maximum's own 1, so log1p sees the rest exactly
    s1 = e.sum(dim=1, keepdim=True)
    L = torch.log1p(s1)
    zy = z.gather(1, y.unsqueeze(1))
    loss = (L - zy).squeeze(1)
    p = torch.exp(z - L)
    others = p.scatter(1, y.unsqueeze(1), 0.0).sum(dim=1, keepdim=True)  # 1 - p_y, no cancellation
    grad = p.scatter(1, y.unsqueeze(1), -others)
    return loss, grad


def mp_reference_loss(logits: torch.Tensor, y: torch.Tensor, digits: int = 40) -> list[float]:
    """The same loss in mpmath with ``digits`` significant digits (slow; small inputs)."""
    import mpmath

    with mpmath.workdps(digits):
        out = []
        for row, t in zip(logits.detach().double().tolist(), y.tolist(), strict=True):
            m = max(row)
            total = mpmath.fsum(mpmath.exp(mpmath.mpf(v) - m) for v in row)
            out.append(float(mpmath.log(total) - (mpmath.mpf(row[t]) - m)))
        return out


def relative_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest elementwise ``|value - ref| / |ref|`` (absolute where ref is 0);
    0 where both are the same infinity, inf where only one is non-finite or value is nan."""
    v, r = value.detach().double().cpu(), ref.double()
    both_inf = torch.isinf(v) & torch.isinf(r) & (torch.sign(v) == torch.sign(r))
    bad = (~torch.isfinite(v) | ~torch.isfinite(r)) & ~both_inf
    if bool(bad.any()):
        return math.inf
    diff = torch.where(both_inf, 0.0, (v - r).abs())
    scale = torch.where(r == 0, 1.0, r.abs())
    return float((diff / scale).max()) if v.numel() else 0.0


def gradient_error(value: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest row-wise ``max|value - ref| / max|ref|``: each row's error relative
    to that row's largest entry (a confident row's whole gradient is tiny)."""
    v, r = value.detach().double().cpu(), ref.double()
    if not v.numel():
        return 0.0
    if not bool(torch.isfinite(v).all()):
        return math.inf
    scale = r.abs().amax(dim=1)
    scale = torch.where(scale == 0, 1.0, scale)
    return float(((v - r).abs().amax(dim=1) / scale).max())


# -- the losses under test ------------------------------------------------------------


def torch_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch's own, per example."""
    return F.cross_entropy(logits, y, reduction="none")


#: The three losses every comparison runs, by the names the table uses.
LOSSES: dict[str, Callable] = {"naive": naive_cross_entropy, "fused": fused_cross_entropy, "torch": torch_cross_entropy}


def run(loss: Callable, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss and gradient of ``loss`` (summed) with respect to a leaf copy of ``logits``;
    the gradient is None when backward fails (the naive loss on some inputs)."""
    x = logits.detach().clone().requires_grad_(True)
    value = loss(x, y)
    try:
        value.sum().backward()
    except RuntimeError:
        return value.detach(), None
    return value.detach(), x.grad


# -- the stress cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One stress case: how to build its logits and targets in a dtype."""

    name: str  #: short id, used in test ids and the table
    what: str  #: one line for the table
    build: Callable[[torch.dtype, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    dtypes: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16")
    classes: int = 10
    rows: int = 37  #: not a power of two on purpose

    def make(self, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The case's logits (in ``dtype``) and class targets, the same on every run."""
        g = torch.Generator().manual_seed(hash_name(self.name))
        return self.build(DTYPES[dtype], g)


def hash_name(name: str) -> int:
    """A stable seed from a case name (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def _normal(C: int, N: int, scale: float = 3.0, shift: float = 0.0):
    def build(dtype, g):
        o = torch.randn(N, C, generator=g, dtype=torch.float64) * scale + shift
        return o.to(dtype), torch.randint(0, C, (N,), generator=g)

    return build


def _ties(sign: float, C: int = 10, N: int = 37):
    """Every logit the same huge value: 3e38 (float16: 6e4) times ``sign``; the loss is ln C."""

    def build(dtype, g):
        value = sign * (6e4 if dtype == torch.float16 else 3e38)
        return torch.full((N, C), value, dtype=dtype), torch.randint(0, C, (N,), generator=g)

    return build


def _past_overflow(C: int = 10, N: int = 37):
    def build(dtype, g):
        edge = EXP_OVERFLOW[str(dtype).removeprefix("torch.")]
        o = edge + 0.5 + torch.rand(N, C, generator=g, dtype=torch.float64) * edge * 0.2
        return o.to(dtype), torch.randint(0, C, (N,), generator=g)

    return build


def _target_far_below(gap: float = 120.0, C: int = 10, N: int = 37):
    """The target's logit ``gap`` below the row's maximum; the other classes at or
    below the target, so the true loss is gap plus a little."""

    def build(dtype, g):
        y = torch.randint(0, C, (N,), generator=g)
        o = -torch.rand(N, C, generator=g, dtype=torch.float64) * 30.0
        o[torch.arange(N), y] = 0.0
        top = (y + 1 + torch.randint(0, C - 1, (N,), generator=g)) % C
        o[torch.arange(N), top] = gap
        return o.to(dtype), y

    return build


def _confident(margin: float = 20.0, C: int = 10, N: int = 37):
    """The target ``margin`` above every other class: the loss is about (C - 1) e^-margin."""

    def build(dtype, g):
        y = torch.randint(0, C, (N,), generator=g)
        o = torch.rand(N, C, generator=g, dtype=torch.float64) * 2.0
        o[torch.arange(N), y] = margin + 2.0
        return o.to(dtype), y

    return build


def _neg_inf_others(C: int = 10, N: int = 37):
    """Half of the non-target classes at -inf (masked out)."""

    def build(dtype, g):
        o = torch.randn(N, C, generator=g, dtype=torch.float64) * 3.0
        y = torch.randint(0, C, (N,), generator=g)
        mask = torch.rand(N, C, generator=g) < 0.5
        mask[torch.arange(N), y] = False
        o[mask] = -math.inf
        return o.to(dtype), y

    return build


F32_WIDE = ("float32", "float64", "bfloat16")  # dtypes that hold 1e8, 1e30 and 3e38

CASES: tuple[Case, ...] = (
    Case("normal-C1", "C = 1 (one class: loss 0)", _normal(1, 37), classes=1),
    Case("normal-C2", "C = 2, logits N(0, 3^2)", _normal(2, 37), classes=2),
    Case("normal-C10", "C = 10, logits N(0, 3^2)", _normal(10, 37)),
    Case("normal-C1000", "C = 1000, logits N(0, 3^2)", _normal(1000, 37), classes=1000),
    Case("normal-C32000", "C = 32000, logits N(0, 3^2)", _normal(32000, 5), classes=32000, rows=5),
    Case("shift-1e4", "every logit + 1e4", _normal(10, 37, shift=1e4)),
    Case("shift-1e4-C1000", "every logit + 1e4, C = 1000", _normal(1000, 37, shift=1e4), classes=1000),
    Case("shift-1e8", "every logit + 1e8", _normal(10, 37, shift=1e8), dtypes=F32_WIDE),
    Case("shift-1e30", "every logit + 1e30", _normal(10, 37, shift=1e30), dtypes=F32_WIDE),
    Case("tie-max", "all logits equal, +3e38 (float16: +6e4): loss ln C", _ties(1.0)),
    Case("tie-min", "all logits equal, -3e38 (float16: -6e4): loss ln C", _ties(-1.0)),
    Case("overflow", "every logit past exp's overflow (88.7; float16 11.1; float64 709.8)", _past_overflow()),
    Case("target-120-below", "target 120 below the row's maximum: loss 120", _target_far_below()),
    Case("confident", "target 20 above the rest: loss ~ 1.9e-8", _confident()),
    Case("neg-inf-others", "half of the non-target logits -inf", _neg_inf_others()),
)


def grid() -> list[tuple[Case, str]]:
    """Every (case, dtype) pair the proof and the table cover."""
    return [(case, dtype) for case in CASES for dtype in case.dtypes]


def measure(case: Case, dtype: str, loss_name: str) -> dict:
    """Run one loss on one case: its loss and gradient errors against the reference,
    and whether its loss or gradient went inf or nan."""
    logits, y = case.make(dtype)
    ref_loss, ref_grad = reference(logits, y)
    value, grad = run(LOSSES[loss_name], logits, y)
    return {
        "case": case.name,
        "dtype": dtype,
        "loss": loss_name,
        "loss_error": relative_error(value, ref_loss),
        "grad_error": math.inf if grad is None else gradient_error(grad, ref_grad),
        "loss_nonfinite": int((~torch.isfinite(value)).sum()),
        "loss_nan": int(torch.isnan(value).sum()),
        "grad_nonfinite": -1 if grad is None else int((~torch.isfinite(grad)).sum()),
        "rows": y.numel(),
    }
