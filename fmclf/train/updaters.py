"""The updater contract's adapters: a torch optimizer, or the textbook's ``updater(batch_size)``
function, behind ``zero_grad`` / ``step(batch_size)``."""

from __future__ import annotations

from typing import Any


class OptimizerUpdater:
    """A ``torch.optim.Optimizer`` behind the updater contract (``step`` ignores the batch size)."""

    reduction = "mean"

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch_size: int) -> None:  # noqa: ARG002 - the optimizer averages itself
        self.optimizer.step()

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
    """Wrap torch optimizers; check that anything else has ``zero_grad`` and ``step``."""
    import torch

    if isinstance(obj, torch.optim.Optimizer):
        return OptimizerUpdater(obj)
    missing = [m for m in ("zero_grad", "step") if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"it returned {type(obj).__name__}, which lacks {' and '.join(missing)}()")
    return obj
