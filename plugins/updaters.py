"""Updaters: the textbook's minibatch SGD and torch's own SGD."""

from __future__ import annotations

from typing import Annotated

import fmclf
from fmclf import Range
from fmclf.errors import OptionError


@fmclf.hookimpl
def register_updaters(register):
    register("sgd", sgd, help="minibatch SGD as the textbook writes it: p -= lr * grad / batch_size")
    register("torch-sgd", torch_sgd, help="torch.optim.SGD (the loss is averaged over the batch)")


def sgd(*, params, lr: float):
    """d2l's ``sgd``: the loss is summed over the batch and the step divides by its size."""
    from .sgd import MinibatchSGD

    return MinibatchSGD(params, lr)


def torch_sgd(*, params, lr: float, momentum: Annotated[float, Range(0, 1)] = 0.0,
              weight_decay: Annotated[float, Range(0)] = 0.0, dampening: Annotated[float, Range(0, 1)] = 0.0,
              nesterov: bool = False):
    """torch.optim.SGD.

    Options:
        momentum: momentum factor (0 is plain SGD)
        weight_decay: L2 penalty added to the gradient
        dampening: dampening for momentum
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0)
    """
    check_torch_sgd(momentum=momentum, dampening=dampening, nesterov=nesterov)
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening, nesterov=nesterov)


@fmclf.checks(torch_sgd)
def check_torch_sgd(*, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False) -> None:
    """Nesterov momentum needs momentum and no dampening (torch refuses it only once it builds)."""
    if nesterov and (momentum <= 0 or dampening != 0):
        raise OptionError(
            f"option nesterov of updater 'torch-sgd' needs momentum above 0 and dampening 0 (got momentum "
            f"{momentum}, dampening {dampening}): set -o updater.momentum=0.9, say, or leave nesterov out."
        )
