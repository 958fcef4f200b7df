"""The fused loss's decided edge cases (see fused_cross_entropy's docstring), on both of its paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fmclf_plugins.fused_cross_entropy import fused_cross_entropy

INF = math.inf
PAD = [0, 36]  # extra ordinary classes: 0 keeps the exp-then-sum path, 36 takes the softmax-kernel path


def run(rows, y, pad=0, dtype=torch.float32, **kw):
    """Loss and gradient for ``rows`` of logits, with ``pad`` extra classes at -30 appended."""
    logits = torch.tensor(rows, dtype=torch.float64)
    if pad:
        logits = torch.cat([logits, torch.full((len(rows), pad), -30.0, dtype=torch.float64)], dim=1)
    logits = logits.to(dtype).requires_grad_()
    loss = fused_cross_entropy(logits, torch.tensor(y), **kw)
    loss.sum().backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize("pad", PAD)
def test_neg_inf_on_other_classes_is_finite_with_zero_gradient_there(pad):
    loss, grad = run([[2.0, -INF, 0.0], [-INF, -INF, 1.0]], [0, 2], pad)
    assert torch.isfinite(loss).all()
    assert loss[1] == pytest.approx(0.0 if not pad else 36 * math.exp(-31), abs=1e-12)
    assert grad[0, 1] == 0 and grad[1, 0] == 0 and grad[1, 1] == 0
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("pad", PAD)
def test_neg_inf_on_the_target_costs_inf_with_a_finite_gradient(pad):
    loss, grad = run([[2.0, -INF, 0.0]], [1], pad)
    assert loss[0] == INF
    assert torch.isfinite(grad).all() and grad[0, 1] == -1.0
    assert grad[0].sum().abs() < 1e-6


@pytest.mark.parametrize("pad", PAD)
def test_pos_inf_logits_share_the_probability(pad):
    loss, grad = run([[INF, INF, 0.0], [INF, 1.0, 0.0], [INF, 1.0, 0.0]], [0, 0, 2], pad)
    assert loss[0] == pytest.approx(math.log(2)) and loss[1] == 0 and loss[2] == INF
    assert grad[0, :3].tolist() == [-0.5, 0.5, 0.0]
    assert grad[1].abs().sum() == 0
    assert grad[2, :3].tolist() == [1.0, 0.0, -1.0]


def test_a_row_of_only_neg_inf_is_uniform():
    loss, grad = run([[-INF, -INF, -INF, -INF], [0.0, 1.0, 2.0, 3.0]], [2, 3])
    assert loss[0] == pytest.approx(math.log(4))
    assert torch.allclose(grad[0], torch.tensor([0.25, 0.25, -0.75, 0.25]))
    assert torch.isfinite(loss[1]) and torch.isfinite(grad[1]).all()  # other rows are untouched


def test_a_row_of_only_neg_inf_is_uniform_with_many_classes():
    logits = torch.full((2, 40), -INF, requires_grad=True)
    with torch.no_grad():
        logits[1] = torch.arange(40.0)
    loss = fused_cross_entropy(logits, torch.tensor([5, 39]))
    loss.sum().backward()
    assert loss[0].item() == pytest.approx(math.log(40))
    assert logits.grad[0, 0] == pytest.approx(1 / 40) and logits.grad[0, 5] == pytest.approx(1 / 40 - 1)


@pytest.mark.parametrize("pad", PAD)
def test_nan_spoils_only_its_own_row(pad):
    loss, grad = run([[math.nan, 0.0, 1.0], [0.0, 1.0, 2.0]], [1, 2], pad)
    assert math.isnan(loss[0]) and torch.isnan(grad[0]).all()
    assert torch.isfinite(loss[1]) and torch.isfinite(grad[1]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_one_class_costs_nothing(dtype):
    logits = torch.randn(6, 1).to(dtype).requires_grad_()
    loss = fused_cross_entropy(logits, torch.zeros(6, dtype=torch.long), label_smoothing=0.3)
    loss.sum().backward()
    assert torch.equal(loss, torch.zeros(6, dtype=loss.dtype)) and torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("C", [10, 40])
def test_an_empty_batch_gives_an_empty_loss(C):
    logits = torch.zeros(0, C, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.zeros(0, dtype=torch.long))
    assert loss.shape == (0,)
    loss.sum().backward()
    assert logits.grad.shape == (0, C)


@pytest.mark.parametrize("C", [10, 40])
def test_every_target_ignored_gives_zeros(C):
    logits = torch.randn(5, C, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.full((5,), -100), label_smoothing=0.1)
    loss.sum().backward()
    assert torch.equal(loss, torch.zeros(5)) and torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_loss_in_float32_or_better_gradient_in_the_logits_dtype(dtype):
    logits = (torch.randn(8, 10) * 4).to(dtype).requires_grad_()
    y = torch.randint(0, 10, (8,))
    loss = fused_cross_entropy(logits, y)
    loss.sum().backward()
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert logits.grad.dtype == dtype
    exact = F.cross_entropy(logits.detach().double(), y, reduction="none")
    assert torch.allclose(loss.double(), exact, rtol=1e-6)


def test_a_16_bit_row_whose_loss_passes_float16s_range_stays_finite():
    logits = torch.tensor([[60000.0, -60000.0]], dtype=torch.float16)
    loss = fused_cross_entropy(logits, torch.tensor([1]))
    assert loss.item() == 120000.0  # more than float16 holds (65504): hence the float32 result


def test_a_confident_row_keeps_its_gradient_in_bfloat16():
    # margin 20: loss ~ 9 e^-20 ~ 1.9e-8; p_y - 1 would round to 0, the other classes' share does not
    logits = torch.tensor([[20.0] + [0.0] * 9], dtype=torch.bfloat16, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.tensor([0]))
    loss.backward()
    assert loss.item() == pytest.approx(9 * math.exp(-20), rel=1e-6)
    assert logits.grad[0, 0].item() == pytest.approx(-9 * math.exp(-20), rel=1e-2)
    theirs = torch.tensor([[20.0] + [0.0] * 9], dtype=torch.bfloat16, requires_grad=True)
    F.cross_entropy(theirs, torch.tensor([0])).backward()
    assert theirs.grad[0, 0].item() == 0.0  # torch's own loses it


def test_second_derivatives_are_refused_clearly():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.tensor([0, 1, 2])).sum()
    (grad,) = torch.autograd.grad(loss, logits, create_graph=False)
    assert grad.shape == (3, 4)
    loss = fused_cross_entropy(logits, torch.tensor([0, 1, 2])).sum()
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(loss, logits, create_graph=True)


def test_targets_that_need_a_gradient_are_refused():
    with pytest.raises(ValueError, match="detach"):
        fused_cross_entropy(torch.randn(2, 3), torch.rand(2, 3, requires_grad=True))


def test_backward_twice_with_retain_graph_gives_the_same_gradient():
    logits = torch.randn(4, 10, requires_grad=True)
    loss = fused_cross_entropy(logits, torch.tensor([0, 1, 2, 3])).sum()
    (a,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (b,) = torch.autograd.grad(loss, logits)
    assert torch.equal(a, b)
