"""``--cuda-graphs``: the training step replayed as one CUDA graph.

A softmax-regression step on a GPU is some 30 tiny kernels; launched one by
one from Python, the GPU waits on the host for most of the step. Captured
once as a CUDA graph, the step (forward, loss, backward, update, the batch's
correct count) is one launch. The math is the eager step's.

What a graph needs, and how this module meets it:

- fixed shapes and addresses: batches are copied into static input tensors;
  a batch of another shape (the last, smaller one of an epoch) runs eagerly.
- no host synchronisation inside the step: components that read a value back
  (``.item()``, a data-dependent shape) fail at capture, with a message.
- an update with no host-side state, since a replay does not run Python:
  only updaters that declare ``capturable = True`` (the built-in ``sgd``) are
  accepted. Declaring it promises that ``step`` keeps nothing on the host,
  reads nothing back and reads its learning rate once. A torch optimizer
  creates its state lazily at its first step, which a captured step would
  then repeat forever.
- warm-up passes before capture (cuBLAS and autograd initialise lazily):
  forward and backward only, with the model's buffers (batch-norm statistics)
  restored afterwards, so warming up trains nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UsageError

WARMUP = 3  # the number PyTorch's CUDA-graph notes use


def check_device(device: Any) -> None:
    """Raise a UsageError unless ``device`` is a CUDA device."""
    if getattr(device, "type", str(device)) != "cuda":
        raise UsageError(
            f"--cuda-graphs needs a CUDA device, and this run is on {device}. "
            "Use --device cuda (or auto on a machine with a GPU), or leave --cuda-graphs out."
        )


def check_supported(device: Any, updater: Any, comm: Any, updater_name: str = "the updater") -> None:
    """Raise a UsageError when ``--cuda-graphs`` cannot run with these parts; ``comm``
    is the run's (:mod:`fmclf.dist.comm`), and a graph cannot hold its collectives."""
    check_device(device)
    if comm.world_size > 1:
        raise UsageError(
            "--cuda-graphs does not combine with distributed training (its gradient all-reduce is not captured). "
            "Leave one of them out."
        )
    if not getattr(updater, "capturable", False):
        raise UsageError(
            f"--cuda-graphs needs an updater whose step a CUDA graph can replay (one that declares "
            f"capturable = True); {updater_name} does not. "
            "Choose such an updater (`fmclf plugins --kind updater`), or leave --cuda-graphs out."
        )


class GraphedStep:
    """One training step of a fixed batch shape, captured on first use."""

    def __init__(self, model: Any, loss_fn: Callable, updater: Any, sum_reduction: bool) -> None:
        self.model, self.loss_fn, self.updater, self.sum_reduction = model, loss_fn, updater, sum_reduction
        self.graph = None
        self.X = self.y = self.total = self.hits = None

    def fits(self, X: Any, y: Any) -> bool:
        """Whether this batch has the captured batch's shape (always true before capture)."""
        if self.graph is None:
            return True
        return (X.shape, y.shape, X.dtype, y.dtype) == (self.X.shape, self.y.shape, self.X.dtype, self.y.dtype)

    def _step(
        self, X: Any, y: Any, update: bool, checks: tuple[Callable, Callable] | None = None,
    ) -> tuple[Any, Any, Any, Any]:
        logits = self.model(X)
        if checks:  # the engine's checks, before the loss sees the logits (not captured: Python only)
            checks[0](logits, y.shape[0])
        losses = self.loss_fn(logits, y)
        if checks:
            checks[1](losses, y.shape[0])
        total = losses.sum()
        (total if self.sum_reduction else losses.mean()).backward()
        if update:
            self.updater.step(y.shape[0])
        hits = (logits.argmax(dim=1) == (y if y.ndim == 1 else y.argmax(dim=1))).sum()
        return logits, losses, total, hits

    def capture(
        self, X: Any, y: Any, check_logits: Callable[[Any, int], None], check_losses: Callable[[Any, int], None],
    ) -> None:
        """Warm up on a side stream, then capture the step for batches shaped like ``X, y``.

        ``check_logits(logits, n)`` and ``check_losses(losses, n)`` see the first
        eager pass's outputs (the engine's shape checks), each before it is used."""
        import torch

        self.X, self.y = X.clone(), y.clone()
        buffers = [t for t in self.model.buffers()]
        saved = [t.detach().clone() for t in buffers]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(WARMUP):
                self.updater.zero_grad()
                self._step(self.X, self.y, update=False, checks=(check_logits, check_losses) if i == 0 else None)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for t, s in zip(buffers, saved):
                t.copy_(s)
        # No gradient may exist at capture, or the graph would add to it on every
        # replay; the captured backward then allocates them in the graph's pool.
        self.updater.zero_grad()
        for p in self.model.parameters():
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        try:
            # on the warm-up's stream, whose cuBLAS state is set up already
            with torch.cuda.graph(graph, stream=side):
                _, _, self.total, self.hits = self._step(self.X, self.y, update=True)
        except RuntimeError as exc:
            raise UsageError(
                f"--cuda-graphs: capturing the training step failed ({str(exc).splitlines()[0][:300]}). "
                "A component reads a value back to the host during the step (.item(), float(), "
                "a shape that depends on the data) or does something else a CUDA graph cannot hold. "
                "Run without --cuda-graphs."
            ) from exc
        self.graph = graph

    def __call__(self, X: Any, y: Any) -> tuple[Any, Any]:
        """Run the step on this batch; returns the batch's summed loss and correct
        count (static tensors, overwritten by the next replay)."""
        self.X.copy_(X)
        self.y.copy_(y)
        self.graph.replay()
        return self.total, self.hits
