"""The fused loss against an exact reference, over the stress grid of tests/benchmarks/loss_stress.py.

The rule: on every case and dtype, fused's error is at most torch's
``F.cross_entropy`` error in the same dtype plus ``TOLERANCE_ULPS`` units in the
last place, and fused is also accurate in absolute terms: its loss within that
tolerance of the float64 reference, its gradient within it of the reference
rounded to the logits' dtype (the best any implementation could return).
"""

from __future__ import annotations

import math

import pytest
import torch
from benchmarks import loss_stress as S

from fmclf_plugins.fused_cross_entropy import fused_cross_entropy

GRID = S.grid()


@pytest.mark.parametrize(("case", "dtype"), GRID, ids=[f"{c.name}-{d}" for c, d in GRID])
def test_fused_is_at_least_as_exact_as_torch(case, dtype):
    fused, torch_ = S.measure(case, dtype, "fused"), S.measure(case, dtype, "torch")
    dt = S.DTYPES[dtype]
    assert fused["loss_error"] <= torch_["loss_error"] + S.tolerance(dt, "loss"), (fused, torch_)
    assert fused["grad_error"] <= torch_["grad_error"] + S.tolerance(dt, "grad"), (fused, torch_)


@pytest.mark.parametrize(("case", "dtype"), GRID, ids=[f"{c.name}-{d}" for c, d in GRID])
def test_fused_is_exact_to_a_few_ulps(case, dtype):
    logits, y = case.make(dtype)
    ref_loss, ref_grad = S.reference(logits, y)
    loss, grad = S.run(fused_cross_entropy, logits, y)
    dt = S.DTYPES[dtype]
    assert loss.dtype == (torch.float64 if dt == torch.float64 else torch.float32)
    assert grad.dtype == dt
    assert S.relative_error(loss, ref_loss) <= S.tolerance(dt, "loss")
    best = ref_grad.to(dt).double()  # the reference as the logits' dtype can hold it
    assert S.gradient_error(grad, best) <= S.tolerance(dt, "grad")


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("shift", [1e4, 1e8, 1e30])
def test_a_shared_shift_changes_nothing(dtype, shift):
    # small integers and their shifted copies: both exactly representable only in
    # float64; in the narrower dtypes the shifted logits round, so compare with
    # the exact loss of the rounded logits instead
    dt = S.DTYPES[dtype]
    g = torch.Generator().manual_seed(7)
    base = torch.randint(-8, 8, (21, 10), generator=g).double()
    y = torch.randint(0, 10, (21,), generator=g)
    shifted = (base + shift).to(dt)
    ref, _ = S.reference(shifted, y)
    loss = fused_cross_entropy(shifted, y)
    assert S.relative_error(loss, ref) <= S.tolerance(dt, "loss")
    if dtype == "float64" and shift <= 1e8:  # base + shift is exact here: the very same losses
        assert torch.allclose(loss, fused_cross_entropy(base, y), rtol=4 * torch.finfo(dt).eps, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("C", [2, 10, 1000])
def test_ties_up_to_the_largest_float_cost_ln_c(dtype, sign, C):
    dt = S.DTYPES[dtype]
    value = sign * (6e4 if dt == torch.float16 else 3e38)
    logits = torch.full((5, C), value, dtype=dt, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.arange(5) % C)
    loss.sum().backward()
    assert torch.allclose(loss.double(), torch.full((5,), math.log(C), dtype=torch.float64), rtol=2e-7, atol=0)
    expected = torch.full((5, C), 1.0 / C, dtype=torch.float64)
    expected[torch.arange(5), torch.arange(5) % C] -= 1.0
    assert torch.allclose(logits.grad.double(), expected, rtol=0, atol=4 * torch.finfo(dt).eps)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_a_target_120_below_the_maximum_costs_120(dtype):
    dt = S.DTYPES[dtype]
    logits = torch.tensor([[0.0, 120.0, -50.0], [120.0, -7.0, 0.0]], dtype=dt, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.tensor([0, 2]))
    assert torch.allclose(loss.double(), torch.tensor([120.0, 120.0], dtype=torch.float64), rtol=1e-6, atol=0)
    loss.sum().backward()
    assert torch.allclose(logits.grad.double(), torch.tensor([[-1.0, 1.0, 0.0], [1.0, 0.0, -1.0]], dtype=torch.float64))


def test_the_reference_agrees_with_mpmath():
    """The float64 reference the grid trusts, checked against 40-digit arithmetic."""
    for case in S.CASES:
        if case.classes > 1000:
            continue
        for dtype in ("float32", "float64"):
            if dtype not in case.dtypes:
                continue
            logits, y = case.make(dtype)
            ref, _ = S.reference(logits[:6], y[:6])
            exact = torch.tensor(S.mp_reference_loss(logits[:6], y[:6]), dtype=torch.float64)
            assert S.relative_error(ref, exact) <= 8 * torch.finfo(torch.float64).eps, (case.name, dtype)
