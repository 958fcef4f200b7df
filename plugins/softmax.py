"""The two softmax-regression models. Both map a batch to logits ``(N, classes)``."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxScratch(nn.Module):
    """``X.reshape(-1, num_inputs) @ W + b`` with W of shape (num_inputs, num_classes).

    W has the textbook's shape and values, but is stored as the transpose of a
    (num_classes, num_inputs) matrix, as ``nn.Linear`` stores its weight, and
    both products are written the way round that matrix makes fast. On a CPU
    (MKL, 256x784 batches, 10 classes) the forward ``(W^T X^T)^T`` takes about
    half the time of ``X @ W``, and autograd then computes the weight gradient
    as ``g^T X``, about a third of the time of ``X^T g`` (it keeps a gradient
    in its parameter's layout). The values are those of ``X @ W + b`` up to
    float rounding.
    """

    def __init__(self, num_inputs: int, num_classes: int) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.W = nn.Parameter(torch.normal(0.0, 0.01, size=(num_classes, num_inputs)).t())
        self.b = nn.Parameter(torch.zeros(num_classes))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        # logits^T = b + W^T X^T as one addmm; made contiguous again (a 10 KB
        # copy) so that losses see the (N, classes) layout they expect.
        return torch.addmm(self.b.unsqueeze(1), self.W.t(), X.reshape(-1, self.num_inputs).t()).t().contiguous()


def _init_weights(m: nn.Module) -> None:
    if type(m) is nn.Linear:
        nn.init.normal_(m.weight, std=0.01)


def softmax_nn(num_inputs: int, num_classes: int) -> nn.Module:
    """``nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_classes))``, the textbook's init."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_classes))
    net.apply(_init_weights)
    return net


def _wide(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K softmax regressions on one batch as one matrix product K * classes rows tall: ``weight`` is
    (K * classes, inputs), ``bias`` (K, classes); returns the logits (K, N, classes).

    The product is taken the way round that :class:`SoftmaxScratch` takes it, ``weight @ X^T``, (K * classes, N):
    measured on this CPU it is about a fifth faster than ``X @ weight^T`` forward and backward together, and
    its weight gradient ``g^T X`` comes out in the weight's own layout. The logits are returned as a view of
    it; whoever needs their rows contiguous copies them once."""
    K, C = bias.shape
    out = torch.addmm(bias.reshape(K * C, 1), weight, X.reshape(len(X), -1).t())
    return out.reshape(K, C, len(X)).transpose(1, 2)


def stacked_scratch(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """``scratch``'s members stacked (W: (K, inputs, classes)), in one product: its :func:`fmclf.batchable` form.
    A batched group keeps each member's W in its own layout (the transpose of a (classes, inputs) matrix), so
    ``W^T`` of all members is one (K * classes, inputs) matrix without a copy."""
    W = params["W"]
    K, n, C = W.shape
    return _wide(X, W.transpose(1, 2).reshape(K * C, n), params["b"])


def stacked_nn(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """``nn``'s members stacked (weight: (K, classes, inputs)), in one product."""
    W = params["1.weight"]
    K, C, n = W.shape
    return _wide(X, W.reshape(K * C, n), params["1.bias"])
