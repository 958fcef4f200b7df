"""The updater contract's adapters: a torch optimizer behind ``zero_grad`` / ``step(batch_size)``."""

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


def adapt_updater(obj: Any) -> Any:
    """Wrap torch optimizers; check that anything else has ``zero_grad`` and ``step``."""
    import torch

    if isinstance(obj, torch.optim.Optimizer):
        return OptimizerUpdater(obj)
    missing = [m for m in ("zero_grad", "step") if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"it returned {type(obj).__name__}, which lacks {' and '.join(missing)}()")
    return obj
