"""CUDA graphs: the training epoch (or step) replayed as one launch.

A softmax-regression step on a GPU is some 30 tiny kernels; launched one by
one from Python, the GPU waits on the host for most of the step. Captured
once as a CUDA graph and replayed, the same kernels run with one launch.
The math is the eager loop's.

On CUDA this is the default (``cuda_graphs`` unset: :func:`decide`) whenever
the parts allow it, and ``--no-cuda-graphs`` turns it off; when they do not
allow it, or a capture or replay fails (:class:`GraphFailed`), the run says so
in one line and trains eagerly, while an explicit ``--cuda-graphs`` that cannot
be honoured is an error. Two units:

- :class:`EpochGraph`, the whole training epoch as one graph: the gathers of
  every batch from the shuffled order, forward, loss, backward, update and
  the metrics of all of them. The order is drawn on the CPU (the same
  permutation every device draws, so a CUDA run repeats a CPU run's order),
  the next epoch's while the GPU trains this one, and copied into the graph's
  input. Used when the training batches are a :class:`fmclf.data.TensorBatches`
  on the device and no callback listens to single batches; visualizers then
  hear one ``on_batch_end`` an epoch, after its last batch.
- :class:`GraphedStep`, one step as a graph, for any other data set: each
  batch is copied into the graph's static input, and a batch of another shape
  (the last, smaller one of an epoch) runs eagerly.

What a graph needs, and how this module meets it:

- fixed shapes and addresses: static input tensors (above).
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

from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from ..wording import flag

WARMUP = 3  # the number PyTorch's CUDA-graph notes use


class GraphFailed(UsageError):
    """A CUDA graph that could not be captured or replayed. The message is for a run that asked for
    graphs (``--cuda-graphs``); ``why`` is the short reason a run on the default path prints in its one
    line before it trains eagerly (:func:`off_note`)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        self.why = f"{what} failed ({type(exc).__name__}: {first})"
        super().__init__(
            f"{flag('cuda_graphs', True)}: {self.why}. A component reads a value back to the host during the step "
            "(.item(), float(), a shape that depends on the data) or does something else a CUDA graph cannot hold. "
            f"Run with {flag('cuda_graphs', False)}, or leave {flag('cuda_graphs')} out: a run that did not ask for "
            "graphs falls back to training kernel by kernel by itself."
        )


def check_device(device: Any) -> None:
    """Raise a UsageError unless ``device`` is a CUDA device."""
    if getattr(device, "type", str(device)) != "cuda":
        raise UsageError(
            f"{flag('cuda_graphs', True)} needs a CUDA device, and this run is on {device}. "
            f"Use {flag('device', 'cuda')} (or auto on a machine with a GPU), or leave {flag('cuda_graphs')} out."
        )


def check_supported(device: Any, updater: Any, comm: Any, updater_name: str = "the updater") -> None:
    """Raise a UsageError when ``--cuda-graphs`` cannot run with these parts; ``comm``
    is the run's (:mod:`fmclf.dist.comm`), and a graph cannot hold its collectives."""
    check_device(device)
    if getattr(comm, "world_size", 1) > 1:
        raise UsageError(
            f"{flag('cuda_graphs', True)} does not combine with distributed training (its gradient all-reduce is not "
            "captured). Leave one of them out."
        )
    if not getattr(updater, "capturable", False):
        raise UsageError(
            f"{flag('cuda_graphs', True)} needs an updater whose step a CUDA graph can replay (one that declares "
            f"capturable = True); {updater_name} does not. "
            f"Choose such an updater (`fmclf plugins --kind updater`), or leave {flag('cuda_graphs')} out."
        )


def decide(requested: bool | None, device: Any, updater: Any, comm: Any,
           updater_name: str = "the updater") -> tuple[bool, str | None]:
    """Whether this run captures its training in CUDA graphs, and the note to print when the
    default cannot: ``requested`` True (``--cuda-graphs``: what cannot be done is an error,
    :func:`check_supported`), False (``--no-cuda-graphs``), or None, the default: on for a CUDA
    device whenever the parts allow it."""
    if requested is False:
        return False, None
    if requested:
        check_supported(device, updater, comm, updater_name)
        return True, None
    if getattr(device, "type", str(device)) != "cuda":
        return False, None
    if getattr(comm, "world_size", 1) > 1:
        return False, off_note("distributed training (its gradient all-reduce cannot be captured)")
    if not getattr(updater, "capturable", False):
        return False, off_note(f"{updater_name} does not declare capturable = True")
    return True, None


def choose(requested: bool | None, device: Any, updater: Any, comm: Any, records: Any,
           say: Callable[[str], None]) -> bool:
    """:func:`decide` for a run's parts (``records`` names the updater in its messages), saying the note
    of a default that cannot be honoured with ``say``."""
    record = records.get("updater")
    use, note = decide(requested, device, updater, comm, record.describe() if record else "the updater")
    if note:
        say(note)
    return use


def off_note(why: str) -> str:
    """The one line a run prints when the default CUDA graphs cannot be used."""
    return f"Note: CUDA graphs are off for this run: {why}; it trains kernel by kernel ({flag('cuda_graphs', False)} " \
           f"says so without this note)."


def fits_epoch(batches: Any, device: Any, batch_listeners: bool) -> bool:
    """Whether the whole epoch can be one graph: the training batches are a
    :class:`~fmclf.data.TensorBatches` held on ``device``, and no callback listens to single
    batches (``batch_listeners``)."""
    from ..data import TensorBatches

    return (isinstance(batches, TensorBatches) and not batch_listeners and len(batches) > 0
            and getattr(batches.X, "device", None) == device and batches.y.device == device)


class EpochGraph:
    """A whole training epoch as one graph (see the module's notes).

    :meth:`program` is the epoch's work on static tensors (the order, the
    per-batch loss sums, the epoch's summed loss and correct count); it is
    what :meth:`capture` records, and what :meth:`run` does eagerly off CUDA
    (tests compare its numbers with the engine's loop there).
    """

    def __init__(self, model: Any, loss_fn: Callable, updater: Any, sum_reduction: bool, batches: Any) -> None:
        import torch

        self.model, self.loss_fn, self.updater, self.sum_reduction = model, loss_fn, updater, sum_reduction
        self.batches = batches
        dev = batches.X.device
        self.num_batches = len(batches)
        self.perm = torch.empty(len(batches.X), dtype=torch.int64, device=dev)
        self.sums = torch.zeros(self.num_batches, dtype=torch.float32, device=dev)  #: each batch's summed loss
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.correct = torch.zeros((), dtype=torch.int64, device=dev)
        self.graph = None
        self._orders: dict[int, Any] = {}  # epoch -> its permutation on the host, drawn ahead

    def program(self) -> None:
        """One epoch on the static tensors: every batch gathered in ``self.perm``'s order, trained,
        and counted (as the engine's loop does it, batch by batch)."""
        X, y, B = self.batches.X, self.batches.y, self.batches.batch_size
        perm, sums, updater, model, loss_fn = self.perm, self.sums, self.updater, self.model, self.loss_fn
        yp = y.index_select(0, perm)  # the labels once, permuted; the images batch by batch
        self.loss_sum.zero_()
        self.correct.zero_()
        for i, start in enumerate(range(0, len(X), B)):
            xb, yb = X.index_select(0, perm[start : start + B]), yp[start : start + B]
            updater.zero_grad()
            logits = model(xb)
            losses = loss_fn(logits, yb)
            total = losses.sum()
            (total if self.sum_reduction else losses.mean()).backward()
            updater.step(yb.shape[0])
            sums[i] = total.detach()
            self.loss_sum += total.detach()
            self.correct += (logits.argmax(dim=1) == (yb if yb.ndim == 1 else yb.argmax(dim=1))).sum()

    def order(self, epoch: int) -> Any:
        """Epoch ``epoch``'s permutation on the host (drawn ahead by :meth:`run` when it could)."""
        ready = self._orders.pop(epoch, None)
        if ready is not None:
            return ready
        perm = self.batches.permutation(epoch)
        return perm.pin_memory() if self.perm.is_cuda else perm

    def capture(self, check_logits: Callable[[Any, int], None], check_losses: Callable[[Any, int], None]) -> None:
        """Warm up on a side stream, then record :meth:`program`. ``check_logits(logits, n)`` and
        ``check_losses(losses, n)`` see the first warm-up pass's outputs (the engine's shape checks)."""
        import torch

        X, y = self.batches.X, self.batches.y
        n = min(self.batches.batch_size, len(X))
        side = _warm_up(self.model, self.loss_fn, self.updater, self.sum_reduction, X[:n], y[:n],
                        check_logits, check_losses)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=side):
                self.program()
        except Exception as exc:  # whatever a capture raises: nothing ran, so training can go on eagerly
            _clear_grads(self.model, self.updater)
            raise GraphFailed("capturing the training epoch", exc) from exc
        torch.cuda.current_stream().wait_stream(side)
        self.graph = graph

    def run(self, epoch: int) -> None:
        """Train epoch ``epoch``: its order into the graph's input, one replay (off CUDA: the program
        itself); then the next epoch's order is drawn while the device works."""
        self.perm.copy_(self.order(epoch), non_blocking=True)
        if self.graph is not None:
            _replay(self.graph, "the training epoch")
        else:
            self.program()
        self._orders = {epoch + 1: self.order(epoch + 1)}


def _replay(graph: Any, what: str) -> None:
    """Replay ``graph``; a launch that fails raises :class:`GraphFailed` (refused at launch, it did not run)."""
    try:
        graph.replay()
    except Exception as exc:
        raise GraphFailed(f"replaying {what} as a CUDA graph", exc) from exc


def _clear_grads(model: Any, updater: Any) -> None:
    # No gradient may exist at capture, or the graph would add to it on every
    # replay; the captured backward then allocates them in the graph's pool.
    updater.zero_grad()
    for p in model.parameters():
        p.grad = None


def _warm_up(model: Any, loss_fn: Callable, updater: Any, sum_reduction: bool, X: Any, y: Any,
             check_logits: Callable[[Any, int], None], check_losses: Callable[[Any, int], None]) -> Any:
    """Forward and backward passes on a side stream (no update), the model's buffers restored
    after; returns the stream. The first pass's outputs go through the engine's checks."""
    import torch

    buffers = list(model.buffers())
    saved = [t.detach().clone() for t in buffers]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(WARMUP):
            updater.zero_grad()
            logits = model(X)
            if i == 0:  # the engine's checks, before the loss sees the logits (not captured: Python only)
                check_logits(logits, y.shape[0])
            losses = loss_fn(logits, y)
            if i == 0:
                check_losses(losses, y.shape[0])
            (losses.sum() if sum_reduction else losses.mean()).backward()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for t, s in zip(buffers, saved):
            t.copy_(s)
    _clear_grads(model, updater)
    return side


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
        side = _warm_up(self.model, self.loss_fn, self.updater, self.sum_reduction, self.X, self.y,
                        check_logits, check_losses)
        graph = torch.cuda.CUDAGraph()
        try:
            # on the warm-up's stream, whose cuBLAS state is set up already
            with torch.cuda.graph(graph, stream=side):
                _, _, self.total, self.hits = self._step(self.X, self.y, update=True)
        except Exception as exc:  # whatever a capture raises: nothing ran, so training can go on eagerly
            _clear_grads(self.model, self.updater)
            raise GraphFailed("capturing the training step", exc) from exc
        self.graph = graph

    def __call__(self, X: Any, y: Any) -> tuple[Any, Any]:
        """Run the step on this batch; returns the batch's summed loss and correct
        count (static tensors, overwritten by the next replay)."""
        self.X.copy_(X)
        self.y.copy_(y)
        _replay(self.graph, "the training step")
        return self.total, self.hits
