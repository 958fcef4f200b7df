"""Updaters: the textbook's minibatch SGD and torch's own SGD, with a learning-rate schedule."""

from __future__ import annotations

from typing import Annotated, Literal

import fmclf
from fmclf import Range
from fmclf.errors import OptionError
from fmclf.wording import flag, option


@fmclf.hookimpl
def register_updaters(register):
    register("sgd", sgd, help="minibatch SGD as the textbook writes it: p -= lr * grad / batch_size (no momentum "
                              "or schedule: torch-sgd has them)")
    register("torch-sgd", torch_sgd, help="torch.optim.SGD (the loss is averaged over the batch), with an optional "
                                          "learning-rate schedule and warmup")


def _stacked_sgd(**kwargs):
    """``sgd``'s vectorised form for batched groups (torch is imported only when one trains)."""
    from .stacked_sgd import stacked_sgd

    return stacked_sgd(**kwargs)


def _stacked_torch_sgd(**kwargs):
    """``torch-sgd``'s vectorised form for batched groups."""
    from .stacked_sgd import stacked_torch_sgd

    return stacked_torch_sgd(**kwargs)


@fmclf.batchable(stacked=_stacked_sgd)
def sgd(*, params, lr: float):
    """d2l's ``sgd``: the loss is summed over the batch and the step divides by its size."""
    from .sgd import MinibatchSGD

    return MinibatchSGD(params, lr)


@fmclf.batchable(per_model=("momentum", "weight_decay", "dampening", "nesterov", "schedule", "warmup", "step_epochs",
                            "gamma", "min_lr"), stacked=_stacked_torch_sgd)
def torch_sgd(
    *,
    params,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    momentum: Annotated[float, Range(0, 1)] = 0.0,
    weight_decay: Annotated[float, Range(0)] = 0.0,
    dampening: Annotated[float, Range(0, 1)] = 0.0,
    nesterov: bool = False,
    schedule: Literal["constant", "step", "cosine", "onecycle"] = "constant",
    warmup: Annotated[float, Range(0)] = 0.0,
    step_epochs: Annotated[int, Range(1)] | None = None,
    gamma: Annotated[float, Range(0, 1, min_open=True)] = 0.1,
    min_lr: Annotated[float, Range(0)] = 0.0,
):
    """torch.optim.SGD, its learning rate changed after every batch by ``schedule``.

    Options:
        momentum: momentum factor (0 is plain SGD)
        weight_decay: L2 penalty added to the gradient
        dampening: dampening for momentum
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0)
        schedule: constant, step (x gamma every step_epochs), cosine (to min_lr), onecycle (as torch's OneCycleLR)
        warmup: epochs (fractions allowed) of a linear rise to lr first; for onecycle, its rise (default 30% of the run)
        step_epochs: for schedule step, epochs between drops (default: a third of the run)
        gamma: for schedule step, the factor of each drop
        min_lr: for schedule cosine, the rate it ends at
    """
    check_torch_sgd(lr=lr, epochs=epochs, momentum=momentum, dampening=dampening, nesterov=nesterov,
                    warmup=warmup, step_epochs=step_epochs, gamma=gamma, min_lr=min_lr)
    total = epochs * steps_per_epoch
    warm = round(warmup * steps_per_epoch)
    if warm >= total and warmup > 0:
        raise OptionError(f"option warmup of updater 'torch-sgd' is in epochs and must be below the run's {epochs} "
                          f"epoch(s) of {steps_per_epoch} step(s), got {warmup}.")
    import torch

    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening,
                                nesterov=nesterov)
    if schedule == "constant" and not warm:
        return optimizer
    from .schedules import factor

    step_steps = (step_epochs or max(1, epochs // 3)) * steps_per_epoch
    shape = factor(schedule, total, warm, step_steps=step_steps, gamma=gamma, floor=min_lr / lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, shape)


@fmclf.checks(torch_sgd)
def check_torch_sgd(*, lr: float | None = None, epochs: int | None = None, momentum: float = 0.0,
                    dampening: float = 0.0, nesterov: bool = False, warmup: float = 0.0, step_epochs: int | None = None,
                    gamma: float = 0.1, min_lr: float = 0.0) -> None:
    """Before any work: Nesterov momentum needs momentum and no dampening (torch refuses it only once
    it builds), warmup fits in the run, a step's gamma shrinks the rate, and a cosine's floor is below
    it. (The option parser checks each bound; this also holds when the factory is called directly.)"""
    where = "of updater 'torch-sgd'"
    if step_epochs is not None and step_epochs < 1:
        raise OptionError(f"option step_epochs {where} must be at least 1 (epochs), got {step_epochs}.")
    if not 0 < gamma <= 1:
        raise OptionError(f"option gamma {where} multiplies the rate at each step and must be above 0 and at most 1, "
                          f"got {gamma}.")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise OptionError(
            f"option nesterov {where} needs momentum above 0 and dampening 0 (got momentum "
            f"{momentum}, dampening {dampening}): set {option('updater', 'momentum', 0.9)}, say, or leave nesterov out."
        )
    if epochs is not None and warmup >= epochs and warmup > 0:
        raise OptionError(f"option warmup {where} is in epochs and must be from 0 to below the run's {epochs} "
                          f"epoch(s), got {warmup}.")
    if lr is not None and not min_lr < lr:
        raise OptionError(f"option min_lr {where} must be 0 or more and below {flag('lr', lr)}, got {min_lr}.")
