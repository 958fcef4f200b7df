"""Updaters: the textbook's minibatch SGD and torch's own SGD."""

from __future__ import annotations

import fmclf


@fmclf.hookimpl
def register_updaters(register):
    register("sgd", sgd, help="minibatch SGD as the textbook writes it: p -= lr * grad / batch_size")
    register("torch-sgd", torch_sgd, help="torch.optim.SGD (the loss is averaged over the batch)")


def sgd(*, params, lr: float):
    """d2l's ``sgd``: the loss is summed over the batch and the step divides by its size."""
    from .sgd import MinibatchSGD

    return MinibatchSGD(params, lr)


def torch_sgd(*, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False):
    """torch.optim.SGD.

    Options:
        momentum: momentum factor (0 is plain SGD)
        weight_decay: L2 penalty added to the gradient
        dampening: dampening for momentum
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0)
    """
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening, nesterov=nesterov)
