"""The two softmax-regression models. Both map a batch to logits ``(N, classes)``."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxScratch(nn.Module):
    """``X.reshape(-1, num_inputs) @ W + b`` with W of shape (num_inputs, num_classes).

    W is stored as the transpose of a (num_classes, num_inputs) matrix: the same
    values and shape the textbook uses, but the weight gradient is then computed
    as ``g^T X`` rather than ``X^T g``, the faster of the two products on a CPU
    (the reason ``nn.Linear`` stores its weight that way round).
    """

    def __init__(self, num_inputs: int, num_classes: int) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.W = nn.Parameter(torch.normal(0.0, 0.01, size=(num_classes, num_inputs)).t())
        self.b = nn.Parameter(torch.zeros(num_classes))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.matmul(X.reshape(-1, self.num_inputs), self.W) + self.b


def _init_weights(m: nn.Module) -> None:
    if type(m) is nn.Linear:
        nn.init.normal_(m.weight, std=0.01)


def softmax_nn(num_inputs: int, num_classes: int) -> nn.Module:
    """``nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_classes))``, the textbook's init."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_classes))
    net.apply(_init_weights)
    return net
