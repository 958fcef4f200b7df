"""The fused cross-entropy: softmax and the loss in one autograd Function.

Per row, with ``m`` the row maximum and ``z = o - m``::

    loss = L - z_y,    L = log sum_c exp(z_c)        (never lse(o) - o_y)

``z_y = o_y - m`` is exact (two nearby floats subtract without rounding), so a
shift shared by every logit, +1e8 or +1e30, changes nothing. ``L`` is summed
so that where the target is the maximum it is ``log1p`` of the other classes'
share: a confident row's loss of 1e-9 is kept, not rounded to 0 by
``log(1 + 1e-9)``.

The gradient is ``(softmax(o) - onehot(y))`` times the incoming gradient, the
target's entry ``p_y - 1`` computed as minus the other classes' share, never
as a difference, so a confident prediction keeps its small gradient in low
precision instead of cancelling to 0. Forward computes it along with the loss
(they share every pass) and saves only that (N, C) tensor, as torch's own
cross-entropy saves its log-softmax; backward scales it.

On the CPU, the common case (class targets, no weights, no smoothing, no
ignored rows) takes a short route of nine operations: torch's softmax
kernel, then ``loss = log1p(rest / p_y)`` with ``rest`` the other classes'
probabilities summed without ``p_y`` (the shared ``1 / sum`` cancels in the
ratio, so it is as exact as the long route) and the gradient's target entry
``-rest``. One look at the largest loss decides whether it holds: when
``p_y`` could have underflowed (a target some 80 below the maximum) or a
row held an infinity or a nan, the batch is computed again the long way.
The long way, and everything else: below 32 classes ``exp(o - m)`` then a
row sum (torch's softmax kernel has a large per-row cost there); from 32
classes on, and on accelerators, torch's fused softmax kernel.

Semantics follow ``torch.nn.functional.cross_entropy(..., reduction="none")``:
class-index or probability targets, ``label_smoothing``, ``ignore_index`` and
per-class ``weight`` mean what they mean there. Where torch gives nan for
infinite logits this module decides; see :func:`fused_cross_entropy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fmclf.errors import OptionError
from fmclf.wording import flag

#: From this many classes on, torch's fused softmax kernel beats exp-then-sum on
#: the CPU (measured with tests/benchmarks/test_loss_speed.py's shapes and 16-64).
KERNEL_MIN_CLASSES = 32

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loss is computed in and returned as: float32 for 16-bit logits, else their own."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def smoothing_for_soft_label(p: float, num_classes: int) -> float:
    """The ``label_smoothing`` that puts probability ``p`` on the true class and
    shares ``1 - p`` equally among the other ``num_classes - 1``:
    ``(1 - p) * C / (C - 1)`` (1/9 for the textbook's 0.9 with 10 classes)."""
    return 0.0 if num_classes <= 1 else (1.0 - p) * num_classes / (num_classes - 1)


class _IgnoredOrInvalid(Exception):
    """Raised inside forward when an unmasked target cannot be gathered."""


def _limits(o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(o, m)``: the logits with each row whose maximum is +inf or -inf replaced
    by its limit, and the row maximum ``m`` (N, 1).

    Such a row is read as a limit of equal, finite logits: the entries equal to
    the maximum become 0 and the rest -inf, so +inf logits share the
    probability and an all -inf row is uniform. A nan makes its row's maximum
    nan, and the row stays nan.
    """
    # (amax is the faster reduction over many classes, max over few)
    m = o.amax(dim=1, keepdim=True) if _use_kernel(o) else o.max(dim=1, keepdim=True).values
    # On the CPU look first (one cheap sum; a huge finite m that overflows it only
    # costs a no-op fix). On an accelerator a look would stall the device.
    if not o.is_cpu or not math.isfinite(float(m.sum())):
        inf_rows = torch.isinf(m)
        o = torch.where(inf_rows, torch.where(o == m, o.new_zeros(()), o.new_full((), -math.inf)), o)
        m = m.masked_fill(inf_rows, 0.0)
    return o, m


def _partition(o: torch.Tensor, m: torch.Tensor, j: torch.Tensor):
    """``(D, L, zj)`` for column ``j`` (N, 1) of each row.

    ``D = softmax(o) - onehot(j)``, its column ``j`` computed as minus the
    other probabilities' share (never ``p_j - 1``), so it keeps every digit
    where ``p_j`` is near 1; ``L = log sum exp(o - m)``, exact to the last
    digit when ``j`` is a maximum; ``zj = o_j - m``. An ignored or invalid
    target raises :class:`_IgnoredOrInvalid` (the caller then masks and checks).
    """
    if _use_kernel(o):
        zj = _gather(o, j) - m
        P = torch.softmax(o, dim=1)  # exp(o - m) / sum, in one pass of torch's kernel
        L = -torch.log(P.amax(dim=1, keepdim=True))  # the maximum's probability is 1 / sum
        pj = P.gather(1, j)
        # Where p_j > 1/2, j is the maximum, and both L and p_j - 1 need the other
        # classes' share, summed without p_j: L = log1p(rest / p_j) keeps its digits
        # and -rest those of p_j - 1. Elsewhere there is nothing to cancel, and a sum of
        # thousands of terms is the less exact of the two. (On the CPU a batch with no
        # such row skips that pass; elsewhere looking would stall the device.)
        confident = pj > 0.5
        if P.is_cpu and not bool(confident.any()):
            return P.scatter_(1, j, pj - 1.0), L, zj
        P.scatter_(1, j, 0.0)
        rest = P.sum(dim=1, keepdim=True)
        L = torch.where(confident, torch.log1p(rest / pj), L)
        return P.scatter_(1, j, torch.where(confident, rest.neg_(), pj - 1.0)), L, zj
    E = o - m
    zj = _gather(E, j)
    E.exp_()
    # u = sum exp(o - m) - 1, summed with column j holding exp(z_j) - 1: that is
    # exactly 0 where z_j = 0 (no 1 + tiny rounding), exact by Sterbenz's lemma
    # while exp(z_j) >= 1/2, and below that the maximum's 1 is among the other
    # terms, so an error of an ulp of 1 cannot matter.
    one, minus_one = _ones(o)
    E.scatter_add_(1, j, minus_one.expand_as(zj))
    u = E.sum(dim=1, keepdim=True)
    # p_j - 1 = (exp(z_j) - 1 - u) / s: two terms <= 0, no cancellation
    E.scatter_add_(1, j, u.neg())
    return E.div_(torch.add(u, one)), torch.log1p(u), zj


def _use_kernel(o: torch.Tensor) -> bool:
    return o.shape[1] >= KERNEL_MIN_CLASSES or not o.is_cpu


_ONES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _ones(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached 0-d tensors 1 and -1 in ``like``'s dtype and device. (A Python number
    in a small op costs a conversion as long as the op itself.)"""
    key = (like.dtype, like.device)
    pair = _ONES.get(key)
    if pair is None:
        pair = _ONES[key] = (torch.tensor(1.0, dtype=like.dtype, device=like.device),
                             torch.tensor(-1.0, dtype=like.dtype, device=like.device))
    return pair


def _gather(x: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    try:
        return x.gather(1, j)
    except RuntimeError:  # a target out of range (or ignore_index): torch's index error
        raise _IgnoredOrInvalid from None


#: The short route's limit on the loss: past it ``p_y`` may be subnormal (float32's
#: smallest normal number is e^-87.3, float64's e^-708.4), and the batch goes the long way.
_SHORT_LIMIT = {torch.float32: 80.0, torch.float64: 700.0}


def _short_route(o: torch.Tensor, j: torch.Tensor):
    """``(loss (N,), D)`` for finite CPU logits in float32 or float64 and valid class indices
    ``j`` (N, 1) with no weights, smoothing or ignored rows; None when the long way is needed.

    ``P = softmax(o)``; ``rest = sum_{c != j} p_c``, summed with ``p_j`` zeroed (never
    ``1 - p_j``); ``loss = log1p(rest / p_j)``, in which the softmax's shared ``1 / sum``
    cancels, so it is ``log1p(sum_{c != j} exp(o_c - o_j))``: every digit of a confident
    row's tiny loss. ``D`` is ``P`` with column ``j`` set to ``-rest``.
    """
    P = torch.softmax(o, dim=1)
    pj = _gather(P, j)  # an ignored or invalid target raises _IgnoredOrInvalid
    # at most 1, as 1 - p_j is: a few ulps over it where p_j is tiny would make |D| > 1
    rest = P.scatter_(1, j, 0.0).sum(dim=1, keepdim=True).clamp_(max=1.0)
    loss = torch.log1p(rest.div(pj))
    # nan (an infinite or nan logit) fails the comparison too
    if not float(loss.max()) <= _SHORT_LIMIT[o.dtype]:
        return None
    return loss.view(-1), P.scatter_(1, j, rest.neg_())


def loss_and_gradient(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None,
                      weight: torch.Tensor | None, eps: float):
    """``(loss (N,), D (N, C))``: the per-row loss and its gradient with respect
    to the logits, ``D = A softmax(o) - a`` (``a`` the row's weighted, smoothed
    target distribution, ``A`` its total), both in :func:`compute_dtype`.

    ``target`` holds class indices (N,) or probabilities (N, C); ``keep`` is
    None or a mask (N,) of the rows whose target is not ignored.
    """
    dtype = compute_dtype(logits.dtype)
    o = logits if logits.dtype == dtype else logits.to(dtype)
    if keep is None and weight is None and not eps and o.is_cpu and o.shape[0] and not target.is_floating_point():
        short = _short_route(o, target.unsqueeze(1))
        if short is not None:
            return short
    o, m = _limits(o)
    C = o.shape[1]
    if target.is_floating_point():  # probabilities
        j = o.argmax(dim=1, keepdim=True)  # a maximum: p_j - 1 is the entry that could cancel
        D, L, _ = _partition(o, m, j)
        pm1 = D.gather(1, j)
        a = target.to(dtype)
        if eps:
            a = a * (1.0 - eps) + eps / C
        if weight is not None:
            a = a * weight
        A = a.sum(dim=1, keepdim=True)
        # sum_c a_c (L - z_c), with 0 * inf read as 0: a class the target leaves out costs nothing
        loss = A * L - torch.where(a == 0, 0.0, a * (o - m)).sum(dim=1, keepdim=True)  # both terms >= 0
        # A p - a, column j as A (p_j - 1) + sum_{c != j} a_c
        D.mul_(A).sub_(a).scatter_(1, j, A * pm1 + a.scatter(1, j, 0.0).sum(dim=1, keepdim=True))
        return loss.view(-1), D
    j = target.unsqueeze(1)
    D, L, zy = _partition(o, m, j)
    loss = L - zy
    if keep is None and weight is None and not eps:  # the plain case: D = p - onehot(y)
        return loss.view(-1), D
    A = None if weight is None else weight[j]  # the weight of the row's target, 0 when ignored
    if keep is not None:
        keep = keep.unsqueeze(1).to(dtype)
        A = keep if A is None else A * keep
    if A is not None:
        loss = torch.where(A == 0, 0.0, A * loss)  # ignored, or weight 0: 0 even where -log p is inf
    if not eps:
        return loss.view(-1), D.mul_(A)
    # a = (1 - eps) w_y onehot(y) + spread w, spread = eps / C on rows not ignored; A = sum(a)
    z = o - m
    W = float(C) if weight is None else weight.sum()
    zsum = z.sum(dim=1, keepdim=True) if weight is None else (torch.where(weight == 0, 0.0, z) @ weight).unsqueeze(1)
    spread = torch.full_like(L, eps / C) if keep is None else keep * (eps / C)
    smooth = spread * (W * L - zsum)  # sum_c spread w_c (L - z_c)
    if keep is not None:
        smooth = torch.where(keep == 0, 0.0, smooth)
    loss = (1.0 - eps) * loss + smooth
    A = (1.0 - eps) * (1.0 if A is None else A) + spread * W
    # A p - a = A (p - onehot(y)) + spread (W onehot(y) - w); scatter_, not
    # scatter_add_, which has no deterministic CUDA kernel
    D.mul_(A).sub_(spread if weight is None else spread * weight)
    return loss.view(-1), D.scatter_(1, j, D.gather(1, j) + spread * W)


class _FusedCrossEntropy(torch.autograd.Function):
    """forward(logits, target, keep, weight, smoothing) -> loss (N,); see :func:`loss_and_gradient`.

    Forward computes the gradient too (it shares every pass with the loss) and
    saves only that; backward scales it by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, logits, target, keep, weight, eps: float):
        loss, D = loss_and_gradient(logits, target, keep, weight, eps)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(D)
            ctx.dtype_in = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise RuntimeError("the fused cross-entropy has no second derivative (backward with create_graph=True)")
        (D,) = ctx.saved_tensors
        # D is ours alone, and autograd frees it after this call unless the graph is
        # retained: then scale it in place and hand its memory on as the gradient
        # (a fresh N x C tensor costs page faults as large as the multiply).
        grad = D.mul_(g.unsqueeze(1)) if not _graph_kept() else D * g.unsqueeze(1)
        return (grad if grad.dtype == ctx.dtype_in else grad.to(ctx.dtype_in)), None, None, None, None


#: Whether the running backward keeps its graph (retain_graph=True); a private torch
#: function (used by torch's own aot_autograd), so without it: assume it does.
_graph_kept = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", lambda: True)


def _mask_targets(y: torch.Tensor, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices safe to gather with, keep-mask of the rows not ignored)``.

    On the CPU every target that is not ignored is checked (a clear error
    instead of torch's index error); on an accelerator that check would stall
    the device, so there an out-of-range target trips torch's own device
    assertion, as it does in ``torch.nn.functional.cross_entropy``.
    """
    keep = y != ignore_index
    if y.is_cpu:
        bad = keep & ((y < 0) | (y >= num_classes))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"target {int(y[i])} (example {i}) is not a class index: with {num_classes} classes a target must be "
                f"in 0..{num_classes - 1}, or equal ignore_index ({ignore_index}) to be ignored."
            )
    return y.masked_fill(~keep, 0), keep


def fused_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example cross-entropy of ``logits`` (N, C), with the meaning of
    ``torch.nn.functional.cross_entropy(..., reduction="none")`` but exact under
    any shared shift of the logits, and defined for infinite ones.

    ``target`` is either class indices (N,) of an integer dtype, or class
    probabilities (N, C) of a floating dtype (rows need not sum to 1, as in
    torch; ``ignore_index`` does not apply to them). ``weight`` (C,) scales each
    class's term; ``label_smoothing`` mixes the target with the uniform
    distribution: ``(1 - eps) * target + eps / C``.

    dtypes: float32 and float64 logits are computed in their own dtype;
    float16 and bfloat16 are computed in float32 (a sum of C exponentials held
    in 8 or 11 significant bits is off by whole percents for C = 1000) and the
    loss is returned in float32, because one row's loss can exceed float16's
    largest value (65504) even when every logit fits, and the caller sums the
    batch. The gradient comes back in the logits' dtype.

    Non-finite logits, decided here (torch gives nan for most of these):

    - ``-inf`` on a non-target class: that class has probability 0; the loss is
      finite and its gradient there is exactly 0. With ``label_smoothing`` (or a
      soft target that gives that class probability) the loss is +inf, the true
      value: the target puts mass where the model puts none.
    - ``-inf`` on the target: the loss is +inf; the gradient stays finite
      (``softmax(o) - onehot(y)``, so -1 at the target).
    - ``+inf`` logits: read as equal, arbitrarily large logits that share the
      probability. The loss is ln(number of +inf logits) when the target is
      one of them, +inf otherwise.
    - a row of only ``-inf``: the limit of equal logits, uniform; the loss is ln C.
    - ``nan`` anywhere in a row: that row's loss and gradient are nan.

    C = 1 gives 0 (one class is always right); an empty batch gives an empty
    result; a row whose target equals ``ignore_index`` gives 0 with a zero
    gradient, also when every row is ignored (torch's mean would be nan there;
    this returns per-row values, so there is no mean to take).
    """
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point (N, C) tensor, got {logits.dtype} of shape "
                         f"{tuple(logits.shape)}")
    N, C = logits.shape
    if C < 1:
        raise ValueError("the logits have 0 classes (shape (N, 0)); a classifier needs at least one class")
    if target.requires_grad:
        raise ValueError("the fused loss does not differentiate with respect to the targets; pass target.detach()")
    if weight is not None:
        if weight.shape != (C,):
            raise ValueError(f"weight has {weight.numel()} entries but the logits have {C} classes; give one weight "
                             f"per class")
        weight = weight.to(device=logits.device, dtype=compute_dtype(logits.dtype))
    eps = float(label_smoothing) if C > 1 else 0.0
    if not 0.0 <= eps <= C / (C - 1 or 1):  # C / (C - 1): the label gets nothing, the rest share all
        raise ValueError(f"label_smoothing must be between 0 and C / (C - 1) = {C / (C - 1):.4g} for {C} classes, got "
                         f"{label_smoothing}")
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(
                f"probability targets must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}; "
                "class-index targets must be an integer tensor of shape (N,)"
            )
        return _FusedCrossEntropy.apply(logits, target, None, weight, eps)
    if target.shape != (N,):
        raise ValueError(f"class-index targets must have shape ({N},) for {N} rows of logits, got "
                         f"{tuple(target.shape)}")
    y = target if target.dtype == torch.int64 else target.long()
    # On the CPU try without a mask first: an ignored (or invalid) target fails
    # to gather, and only then is the mask built. That keeps the common case lean.
    if logits.is_cpu and not 0 <= ignore_index < C:
        try:
            return _FusedCrossEntropy.apply(logits, y, None, weight, eps)
        except _IgnoredOrInvalid:
            pass
    return _FusedCrossEntropy.apply(logits, *_mask_targets(y, C, ignore_index), weight, eps)


class FusedCrossEntropy:
    """The ``fused`` loss component: ``loss(logits, y)`` -> (N,), options fixed at construction."""

    @property
    def divergence_hint(self) -> str:
        """What the engine's divergence message advises: this loss stays finite for finite logits, so
        suggesting it (the core's general advice) to a run that already uses it would mislead."""
        return ("The fused loss stays finite for any finite logits, so the logits themselves became inf or nan: "
                f"the weights overflowed. Use a smaller {flag('lr')}.")

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        soft_label: float | None = None,
        ignore_index: int = -100,
        weight: Sequence[float] | None = None,
    ) -> None:
        self.label_smoothing = label_smoothing
        self.soft_label = soft_label
        self.ignore_index = ignore_index
        self.weight = None if weight is None else torch.tensor(list(weight), dtype=torch.float64)
        self._weights: dict[tuple, torch.Tensor] = {}

    def _weight_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        if self.weight is None:
            return None
        key = (logits.device, compute_dtype(logits.dtype))
        if key not in self._weights:
            self._weights[key] = self.weight.to(device=logits.device, dtype=key[1])
        return self._weights[key]

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        C = logits.shape[-1]
        if self.weight is not None and len(self.weight) != C:
            raise OptionError(
                f"option weight of loss 'fused' has {len(self.weight)} entries but the model has {C} classes; "
                "give one weight per class."
            )
        eps = self.label_smoothing if self.soft_label is None else smoothing_for_soft_label(self.soft_label, C)
        return fused_cross_entropy(logits, y, weight=self._weight_for(logits), ignore_index=self.ignore_index,
                                   label_smoothing=eps)

    def __repr__(self) -> str:
        opts = [f"label_smoothing={self.label_smoothing}"] if self.label_smoothing else []
        if self.soft_label is not None:
            opts.append(f"soft_label={self.soft_label}")
        if self.ignore_index != -100:
            opts.append(f"ignore_index={self.ignore_index}")
        if self.weight is not None:
            opts.append(f"weight={self.weight.tolist()}")
        return f"FusedCrossEntropy({', '.join(opts)})"
