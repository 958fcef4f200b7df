"""The updater contract's adapters: a torch optimizer (and scheduler), or the textbook's
``updater(batch_size)`` function, behind ``zero_grad`` / ``step(batch_size)``."""

from __future__ import annotations

from typing import Any

from ..numbers import is_number


class OptimizerUpdater:
    """A ``torch.optim.Optimizer`` behind the updater contract (``step`` ignores the batch size).

    With a ``scheduler`` (a torch LR scheduler), each step is ``optimizer.step()`` then ``scheduler.step()``: the
    schedule counts batches, not epochs. ``last_lr`` is the learning rate the latest step used, read before the
    scheduler moves it on.
    """

    reduction = "mean"

    def __init__(self, optimizer: Any, scheduler: Any = None) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.last_lr: float | None = None

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch_size: int) -> None:
        self.optimizer.step()
        if self.scheduler is not None:
            self.last_lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class BatchSizeFunction:
    """The textbook's ``updater(batch_size)`` behind the updater contract: called after
    ``loss.sum().backward()``, exactly as ``train_epoch_ch3`` calls it. The function zeroes the
    gradients itself (``d2l.sgd`` does, after its step), so ``zero_grad`` does nothing."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def zero_grad(self) -> None:
        pass  # train_epoch_ch3 calls no zero_grad for its own updaters

    def step(self, batch_size: int) -> None:
        self.fn(batch_size)


def adapt_updater(obj: Any) -> Any:
    """Wrap torch optimizers, and ``(optimizer, scheduler)`` pairs; check that anything else
    has ``zero_grad`` and ``step``. Raises TypeError saying what is wrong."""
    import torch

    if isinstance(obj, torch.optim.Optimizer):
        return OptimizerUpdater(obj)
    if isinstance(obj, tuple):
        if len(obj) != 2 or not isinstance(obj[0], torch.optim.Optimizer):
            kinds = ", ".join(type(o).__name__ for o in obj)
            raise TypeError(f"it returned a tuple ({kinds}); a pair must be (torch.optim.Optimizer, LR scheduler)")
        optimizer, scheduler = obj
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise TypeError("its scheduler is ReduceLROnPlateau, which steps on a metric, not once per batch; "
                            "return a scheduler that steps per batch, or lower the rate from a callback")
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"the second item of its pair is {type(scheduler).__name__}, which has no step(); "
                            f"it must be a torch LR scheduler")
        if getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise TypeError("its scheduler was made for another optimizer than the one it returned, "
                            "so the schedule would change nothing")
        return OptimizerUpdater(optimizer, scheduler)
    if missing := [m for m in ("zero_grad", "step") if not callable(getattr(obj, m, None))]:
        raise TypeError(f"it returned {type(obj).__name__}, which lacks {' and '.join(missing)}()")
    return obj


def scheduler_of(updater: Any) -> Any:
    """The LR scheduler behind an adapted updater, or None."""
    return getattr(updater, "scheduler", None) if isinstance(updater, OptimizerUpdater) else None


def current_lr(updater: Any) -> float | None:
    """The learning rate of the updater's latest step (its first parameter group's), or
    None when it does not say: an optimizer's ``param_groups``, else an ``lr`` attribute."""
    value = getattr(updater, "last_lr", None)
    if value is None:
        holder = updater.optimizer if isinstance(updater, OptimizerUpdater) else updater
        groups = getattr(holder, "param_groups", None)
        value = groups[0].get("lr") if groups else getattr(holder, "lr", None)
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):  # an lr that is no number: not ours to log
        return None


def change_lr(updater: Any, how: str, number: float) -> float:
    """Set the learning rate to ``number`` (``how`` "set") or multiply it by ``number`` ("scale"), and
    return the rate the next step uses. One factor (the new rate over the current one) multiplies every
    rate the updater holds: a torch optimizer's parameter groups (and their ``initial_lr``) with its
    scheduler's ``base_lrs``, so that a schedule keeps its shape at the new scale; else an ``lr``
    attribute. Raises TypeError when the updater keeps its rate where fmclf cannot see it."""
    holder = updater.optimizer if isinstance(updater, OptimizerUpdater) else updater
    groups = getattr(holder, "param_groups", None)
    if groups:
        now = float(groups[0]["lr"])
    elif is_number(getattr(holder, "lr", None)):
        now = float(holder.lr)
    else:
        raise TypeError("it keeps its learning rate where fmclf cannot change it (it has neither param_groups nor "
                        "a numeric lr attribute); give it an lr attribute that its step reads")
    if how == "set" and now == 0:
        raise TypeError("its learning rate is 0 now, so no factor takes it to the rate asked for")
    factor = number / now if how == "set" else number
    if groups:
        for group in groups:
            for key in ("lr", "initial_lr"):
                if is_number(group.get(key)):
                    group[key] = group[key] * factor
        scheduler = scheduler_of(updater)
        if getattr(scheduler, "base_lrs", None) is not None:
            scheduler.base_lrs = [b * factor for b in scheduler.base_lrs]
        return float(groups[0]["lr"])
    holder.lr = number if how == "set" else holder.lr * factor
    return float(holder.lr)
