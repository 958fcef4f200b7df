"""The vectorised forms of ``sgd`` and ``torch-sgd`` for batched groups (see :mod:`fmclf.host.batchable`).

Every parameter is stacked, its first dimension the member; each member's
learning rate (and momentum, weight decay ...) is one entry of a tensor
broadcast over that dimension, so one group's step is a few whole-tensor
operations however many members it has. The arithmetic is the members' own:
``p -= lr * grad / batch_size`` for the textbook's SGD, and torch.optim.SGD's
rule (weight decay, momentum whose first step copies the gradient, dampening,
Nesterov) for ``torch-sgd``, its rate ``base * schedule(step)`` read from the
member's own ``LambdaLR``.
"""

from __future__ import annotations

from typing import Any

import torch


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """``values`` as a tensor shaped to broadcast over ``like``'s member dimension."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.ndim - 1)))


class StackedMinibatchSGD:
    """K textbook SGDs at once: ``p[k] += grad[k] * (-lr[k] / batch_size)``, as each adds ``-lr / batch_size``
    times its gradient alone, in one fused call for all parameters."""

    reduction = "sum"

    def __init__(self, params: list[torch.Tensor], members: list[Any]) -> None:
        self.params = params
        self.members = members
        self.base = [float(m.lr) for m in members]
        self._scales: dict[int, list[torch.Tensor]] = {}  #: per batch size: each member's -lr / batch_size

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, batch_size: int) -> None:
        scales = self._scales.get(batch_size)
        if scales is None:  # two sizes an epoch (the last batch is shorter): built once each
            column = [-lr / batch_size for lr in self.base]
            scales = self._scales[batch_size] = [_column(column, p) for p in self.params]
        pairs = [(p, s) for p, s in zip(self.params, scales, strict=True) if p.grad is not None]
        if pairs:
            torch._foreach_addcmul_([p for p, _ in pairs], [p.grad for p, _ in pairs], [s for _, s in pairs])

    def lrs(self) -> list[float]:
        return list(self.base)

    def drop(self, k: int) -> None:
        self.base[k] = 0.0
        self._scales.clear()

    def export(self, k: int) -> None:
        """The textbook SGD keeps nothing but its rate, which its own object already holds."""


def stacked_sgd(*, params: list[torch.Tensor], members: list[Any]) -> StackedMinibatchSGD:
    """``sgd``'s vectorised form (its :func:`fmclf.batchable` ``stacked``)."""
    return StackedMinibatchSGD(params, members)


class StackedTorchSGD:
    """K ``torch.optim.SGD`` (one parameter group each), each with its own ``LambdaLR`` schedule or none."""

    reduction = "mean"

    def __init__(self, params: list[torch.Tensor], members: list[Any]) -> None:
        self.params = params
        self.members = members
        groups = [m.optimizer.param_groups[0] for m in members]
        self.shapes = [_schedule(m) for m in members]
        self.steps = max(s[2] for s in self.shapes)  #: steps taken so far (every member the same)
        self.base = [s[0] for s in self.shapes]
        self.alive = [1.0] * len(members)
        self.momentum = [float(g["momentum"]) for g in groups]
        self.decay = [float(g["weight_decay"]) for g in groups]
        self.nesterov = [bool(g["nesterov"]) for g in groups]
        self.uses_momentum = any(self.momentum)
        p0 = params[0]
        self._m = [_column(self.momentum, p) for p in params]
        self._keep = [_column([1.0 - float(g["dampening"]) for g in groups], p) for p in params]
        self._wd = [_column(self.decay, p) for p in params] if any(self.decay) else None
        self._nest = ([_column([float(n) for n in self.nesterov], p).bool() for p in params]
                      if any(self.nesterov) else None)
        self._plain = [_column([0.0 if m else 1.0 for m in self.momentum], p).bool() for p in params]
        self.buffers: list[torch.Tensor] | None = None
        if self.uses_momentum and self.steps:  # resumed: each member's buffers from its own optimizer
            self.buffers = [torch.stack([_buffer(m, i, p[k]) for k, m in enumerate(members)])
                            for i, p in enumerate(params)]
        self._rate = torch.empty(len(members), dtype=p0.dtype, device=p0.device)
        self.last: list[float] | None = None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _rates(self, step: int) -> list[float]:
        return [b * f(step) * a if f is not None else b * a
                for (b, f, _), a in zip(self.shapes, self.alive, strict=True)]

    @torch.no_grad()
    def step(self, batch_size: int) -> None:
        rates = self._rates(self.steps)
        self.last = rates
        self._rate.copy_(torch.tensor(rates, dtype=self._rate.dtype))
        first = self.buffers is None
        if first and self.uses_momentum:
            self.buffers = [torch.zeros_like(p) for p in self.params]
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self._wd is not None:
                g = g + self._wd[i] * p
            if self.uses_momentum:
                buf = self.buffers[i]
                if first:  # torch's first step: the buffer is the gradient, undampened
                    buf.copy_(g)
                else:
                    buf.mul_(self._m[i]).add_(self._keep[i] * g)
                moved = buf if self._nest is None else torch.where(self._nest[i], g + self._m[i] * buf, buf)
                g = torch.where(self._plain[i], g, moved)  # momentum 0: torch uses the gradient itself
            p.sub_(self._rate.reshape(-1, *([1] * (p.ndim - 1))) * g)
        self.steps += 1

    def lrs(self) -> list[float]:
        """Each member's rate of the latest step (as ``OptimizerUpdater.last_lr`` reports it)."""
        return self.last if self.last is not None else self._rates(max(self.steps - 1, 0))

    def drop(self, k: int) -> None:
        self.alive[k] = 0.0

    def export(self, k: int) -> None:
        """Member ``k``'s momentum buffers and schedule position into its own optimizer and scheduler."""
        member = self.members[k]
        optimizer, scheduler = member.optimizer, member.scheduler
        if self.buffers is not None:
            for p_own, buf in zip(optimizer.param_groups[0]["params"], self.buffers, strict=True):
                optimizer.state[p_own]["momentum_buffer"] = buf[k].detach().clone()
        if scheduler is not None:
            base, shape, _ = self.shapes[k]
            scheduler.last_epoch = self.steps
            scheduler._step_count = self.steps + 1
            rate = base * shape(self.steps)
            scheduler._last_lr = [rate]
            optimizer.param_groups[0]["lr"] = rate
            member.last_lr = base * shape(self.steps - 1) if self.steps else None


def _schedule(member: Any) -> tuple[float, Any, int]:
    """A member's base rate, schedule factor (None: constant) and steps taken, from its own scheduler."""
    scheduler = member.scheduler
    if scheduler is None:
        return float(member.optimizer.param_groups[0]["lr"]), None, _steps_of(member)
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) or len(scheduler.lr_lambdas) != 1:
        raise ValueError(f"{type(scheduler).__name__} is not a one-group LambdaLR")
    return float(scheduler.base_lrs[0]), scheduler.lr_lambdas[0], int(scheduler.last_epoch)


def _steps_of(member: Any) -> int:
    """Steps an optimizer without a scheduler has taken: 1 or more once its momentum buffers exist."""
    state = member.optimizer.state
    return 1 if any("momentum_buffer" in s for s in state.values()) else 0


def _buffer(member: Any, i: int, like: torch.Tensor) -> torch.Tensor:
    own = member.optimizer.param_groups[0]["params"][i]
    buf = member.optimizer.state.get(own, {}).get("momentum_buffer")
    return buf.detach().to(like.device) if buf is not None else torch.zeros_like(like)


def stacked_torch_sgd(*, params: list[torch.Tensor], members: list[Any]) -> StackedTorchSGD:
    """``torch-sgd``'s vectorised form (its :func:`fmclf.batchable` ``stacked``)."""
    return StackedTorchSGD(params, members)
