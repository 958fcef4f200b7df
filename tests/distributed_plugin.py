"""Components for tests/test_distributed.py, loaded with ``fmclf -p distributed_plugin``.

``unsharded`` is Fashion-MNIST behind a factory that takes no ``shard``.
``scripted`` is the scratch model (same weights, same output) plus a buffer
that its training forward pass updates from the batch, as batch norm's running
statistics are; when ``$FMCLF_TEST_CUE`` is ``RANK:CALL:ACTION`` it sends
itself SIGTERM (ACTION ``SIGTERM``), raises (ACTION ``raise``) or moves its own weights
away from the other processes' (ACTION ``drift``) on its
CALL-th training forward pass in the process of that RANK.
"""

from __future__ import annotations

import os
import signal

import fmclf


@fmclf.hookimpl
def register_datasets(register):
    register("unsharded", unsharded, help="Fashion-MNIST through a factory without `shard`")


@fmclf.hookimpl
def register_models(register):
    register("scripted", scripted, help="the scratch model, signalling or failing on cue ($FMCLF_TEST_CUE)")


def unsharded(*, batch_size: int, device, seed: int = 0, data_root: str | None = None, verify: bool = True):
    from fmclf_plugins.fashion_mnist import fashion_mnist

    return fashion_mnist(batch_size=batch_size, device=device, seed=seed, data_root=data_root, verify=verify)


def scripted(*, num_inputs: int, num_classes: int):
    import torch

    from fmclf_plugins.softmax import SoftmaxScratch

    cue = os.environ.get("FMCLF_TEST_CUE", "")
    rank, call, action = cue.split(":") if cue else ("-1", "0", "")

    class Scripted(SoftmaxScratch):
        calls = 0

        def __init__(self, num_inputs: int, num_classes: int) -> None:
            super().__init__(num_inputs, num_classes)
            self.register_buffer("input_mean", torch.zeros(num_inputs))

        def forward(self, X):
            if self.training:
                self.input_mean.mul_(0.9).add_(X.reshape(-1, self.num_inputs).mean(dim=0), alpha=0.1)
            if self.training and os.environ.get("RANK", "0") == rank:
                Scripted.calls += 1
                if Scripted.calls == int(call):
                    if action == "raise":
                        raise RuntimeError(f"scripted failure on training call {call} in rank {rank}")
                    if action == "drift":  # this process's weights part from the others' for good
                        with torch.no_grad():
                            self.b.add_(1.0)
                        return super().forward(X)
                    os.kill(os.getpid(), getattr(signal, action))
            return super().forward(X)

    return Scripted(num_inputs, num_classes)
