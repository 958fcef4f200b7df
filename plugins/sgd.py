"""The textbook's minibatch SGD as an updater object."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class MinibatchSGD:
    """``p -= lr * p.grad / batch_size`` for every parameter, in one foreach call.

    The engine sums the loss over the batch before ``backward`` for updaters
    like this one, so dividing by the batch size gives the mean gradient.
    """

    reduction = "sum"
    #: ``step`` keeps no state on the host and never reads a tensor back, so
    #: ``--cuda-graphs`` may capture it (see fmclf.graphs)
    capturable = True

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, batch_size: int) -> None:
        params = [p for p in self.params if p.grad is not None]
        if params:  # one fused kernel per dtype and device instead of one per parameter
            torch._foreach_add_(params, [p.grad for p in params], alpha=-self.lr / batch_size)

    def state_dict(self) -> dict:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
