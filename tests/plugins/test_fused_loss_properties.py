"""Properties of cross-entropy that must hold for the fused loss on any logits (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmclf_plugins.fused_cross_entropy import fused_cross_entropy

SETTINGS = settings(max_examples=40, deadline=None)
DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def problems(draw):
    """Logits (N, C) with a shared shift, class targets, and the loss's options."""
    N = draw(st.integers(1, 6))
    C = draw(st.sampled_from([1, 2, 3, 10, 33, 40]))  # 33 and 40 take the softmax-kernel path
    dtype = draw(DTYPES)
    values = draw(st.lists(st.floats(-60, 60, allow_nan=False, width=32), min_size=N * C, max_size=N * C))
    shift = draw(st.sampled_from([0.0, 1e4, 1e8, -1e30]))
    logits = (torch.tensor(values, dtype=torch.float64).reshape(N, C) + shift).to(dtype)
    y = torch.tensor(draw(st.lists(st.integers(0, C - 1), min_size=N, max_size=N)))
    soft = draw(st.booleans())
    target = y
    if soft:
        q = torch.tensor(draw(st.lists(st.floats(0, 1), min_size=N * C, max_size=N * C)),
                         dtype=torch.float64).reshape(N, C)
        q[torch.arange(N), y] += 1e-3  # never an all-zero row
        target = (q / q.sum(dim=1, keepdim=True)).to(dtype)
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0]))
    return logits, target, smoothing


def loss_and_grad(logits, target, smoothing):
    x = logits.clone().requires_grad_()
    loss = fused_cross_entropy(x, target, label_smoothing=smoothing)
    loss.sum().backward()
    return loss.detach(), x.grad


def slack(logits):
    return 64 * torch.finfo(logits.dtype).eps * max(logits.shape[1], 1)


@SETTINGS
@given(problems())
def test_the_loss_is_never_negative(problem):
    loss, _ = loss_and_grad(*problem)
    assert (loss >= 0).all(), loss


@SETTINGS
@given(problems())
def test_gradient_rows_sum_to_zero(problem):
    # sum_c (A p_c - a_c) = A - sum_c a_c = 0, whatever the target and smoothing
    logits = problem[0]
    _, grad = loss_and_grad(*problem)
    assert (grad.double().sum(dim=1).abs() <= slack(logits)).all(), grad.sum(dim=1)


@SETTINGS
@given(problems())
def test_gradient_entries_lie_in_minus_one_one(problem):
    _, grad = loss_and_grad(*problem)
    assert (grad.abs() <= 1.0).all(), grad


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_permuting_the_classes_with_the_labels_changes_nothing(problem, rnd):
    logits, target, smoothing = problem
    C = logits.shape[1]
    perm = list(range(C))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    if target.is_floating_point():
        permuted_target = target[:, perm]
    else:
        permuted_target = torch.argsort(perm)[target]  # class perm[j] moved to place j
    loss, grad = loss_and_grad(logits, target, smoothing)
    loss_p, grad_p = loss_and_grad(logits[:, perm], permuted_target, smoothing)
    tol = slack(logits)
    assert torch.allclose(loss_p, loss, rtol=tol, atol=tol), (loss, loss_p)
    assert torch.allclose(grad_p, grad[:, perm], rtol=tol, atol=tol)
