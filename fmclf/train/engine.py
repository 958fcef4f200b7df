"""fit, evaluate, predict: the training loop and nothing else.

The update rule is the textbook's: an updater of our own gets ``loss.sum().backward()`` then ``step(batch_size)``;
a torch optimizer gets ``loss.mean().backward()`` then ``step()``. Metrics accumulate in tensors on the device and
are read once per epoch, so a CUDA run does not wait on the host after every batch.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import events
from ..dist.comm import Solo
from ..errors import ComponentError, DivergenceError, Interrupted, to_stderr
from ..host.registry import ComponentRecord
from ..wording import flag
from . import graphs
from .blame import blame, blame_gradients, blame_labels, blame_update, blamed, component_fault, describe, guarded
from .graphs import GraphFailed
from .heldout import HeldOut, Metric
from .inputs import check_inputs, check_split_inputs
from .labels import check_batch, check_splits
from .metrics import per_class_accuracy
from .updaters import adapt_updater, change_lr, current_lr


@dataclass
class TrainState:
    """Where training stands; a checkpoint stores it and ``--resume`` restores it."""

    epoch: int = 0  #: epochs completed
    batch: int = 0  #: batches done in the next epoch (non-zero only when interrupted mid-epoch)
    loss_sum: float = 0.0  #: partial sums of that unfinished epoch
    correct: int = 0
    examples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  #: one metrics row per finished epoch
    stopped: dict[str, Any] | None = None  #: a callback's stop: {"by", "reason", "epoch"} (see events.Control)
    #: seconds that unfinished epoch took before it stopped: a resumed epoch is timed as both parts, not the last
    seconds: float = 0.0
    lr: float | None = None  #: the rate a callback last set (control.set_lr / scale_lr), or None
    schedule_epochs: int | None = None  #: the epochs the updater (its schedule) was built for; kept on resume


@dataclass(eq=False)
class StopFlag:
    """Set from a signal handler; the loop stops after the batch in flight."""

    signal: str | None = None

    def request(self, signal_name: str) -> None:
        self.signal = signal_name

    def __bool__(self) -> bool:
        return self.signal is not None


@dataclass
class Parts:
    """The assembled components of a run, with the records they came from."""

    dataset: Any
    model: Any
    loss: Callable
    updater: Any
    visualizers: list[tuple[ComponentRecord, Any]] = field(default_factory=list)
    records: dict[str, ComponentRecord] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)  #: what --metric adds to accuracy and loss
    callbacks: list[tuple[ComponentRecord, Any]] = field(default_factory=list)


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return str(tuple(shape)) if shape is not None else f"no shape (a {type(value).__name__})"


def loss_shape_problem(losses: Any, n: int) -> str | None:
    """What is wrong with a loss's result for a batch of ``n`` (``"returned ..."``), or None: a loss returns one
    value per example, shape (N,). ``fmclf run`` and ``fmclf bench loss`` refuse alike."""
    if getattr(losses, "shape", None) == ():
        return (f"returned one number for a batch of {n}, but a loss must return one value per example, shape (N,): "
                f"fmclf sums or averages them itself, so leave out the loss's final .sum() or .mean().")
    if tuple(getattr(losses, "shape", ())) != (n,) or not hasattr(losses, "sum"):
        return (f"returned shape {_shape(losses)} for a batch of {n}; a loss must return one value per example, "
                f"shape (N,).")
    return None


class Trainer:
    """Trains ``parts`` for ``epochs`` epochs, evaluating after each.

    ``checkpoint(state)`` is called after each epoch's metrics are final and when a stop is requested mid-epoch;
    ``comm`` (see :mod:`fmclf.dist.comm`) averages gradients and gathers the held-out logits across processes: a
    process on its own gets :class:`~fmclf.dist.comm.Solo`, whose collectives do nothing. Callbacks
    (``parts.callbacks``) hear every event before visualizers, may stop the run through ``event.control`` (rank 0's
    decision is everyone's), and their ``on_epoch_end`` runs before the checkpoint, so what they decide is saved
    with it. ``warn`` prints the warnings of components (``control.warn``) and of listeners that fail in
    ``on_exception``.
    """

    def __init__(self, parts: Parts, *, device: Any, epochs: int, run_dir: Any = None,
                 checkpoint: Callable[[TrainState], None] | None = None, stop: StopFlag | None = None,
                 comm: Solo = Solo(),  # noqa: B008 - stateless; every collective a no-op
                 config: dict[str, Any] | None = None, cuda_graphs: bool | None = None, graphs_decided: bool = False,
                 divergence_advice: str | None = None, warn: Callable[[str], None] | None = None,
                 graph_fallback: Callable[[str], None] | None = None) -> None:
        self.parts, self.device, self.epochs, self.run_dir, self.comm = parts, device, epochs, run_dir, comm
        #: said when the loss has no divergence_hint of its own
        self.divergence_advice = divergence_advice or (f"Try a smaller {flag('lr')}, or a loss that stays finite for "
                                                       f"any finite logits.")
        self.checkpoint = checkpoint
        self.stop = stop if stop is not None else StopFlag()
        self.config = config or {}
        self.warn = warn or to_stderr
        self.lr = (self.config.get("run") or {}).get("lr")  #: named when a step overflows
        self.updater = adapt_updater(parts.updater)
        self.sum_reduction = getattr(self.updater, "reduction", "sum") != "mean"
        self.params = [p for p in parts.model.parameters() if p.requires_grad]
        self.classes = list(parts.dataset.classes)
        self.input_shape = getattr(parts.dataset, "input_shape", None)  #: what every split's examples must fit
        # who is blamed for a fault: the component's record, or "the model" ... when built without one (tests)
        self._who = {kind: blamed(parts.records, kind) for kind in ("dataset", "model", "loss", "updater")}
        listeners = [("callback", rec, obj) for rec, obj in parts.callbacks]
        listeners += [("visualizer", rec, obj) for rec, obj in parts.visualizers]
        self._listeners = {name: [(kind, rec, getattr(obj, name)) for kind, rec, obj in listeners
                                  if callable(getattr(obj, name, None))] for name in events.EVENTS}
        self.control = events.Control(self.warn)
        self.heldout = HeldOut(parts.model, parts.loss, parts.metrics, len(self.classes), comm, who=self._who,
                               input_shape=self.input_shape)
        self.splits = ("valid", "test") if getattr(parts.dataset, "valid", None) is not None else ("test",)
        self._epoch: int | None = None  # where training is, for on_exception
        self._logits: tuple[int, Any] | None = None  # the last eager batch's (number, logits)
        self._epoch_start = time.perf_counter()  # when the epoch in hand began (earlier, for a resumed one)
        self._batch: int | None = None
        # CUDA graphs (fmclf.train.graphs): a Trainer used on its own decides from what cuda_graphs asks
        # (graphs.choose); with graphs_decided, cuda_graphs is its caller's decision (a run's Session, whose plan
        # records it), not decided twice. graph_fallback(note) lets a failed capture or replay train eagerly,
        # saying why; by default (None) the warning does, and only cuda_graphs=True without it is an error.
        self.graphed = self.epoch_graph = None
        self.graph_fallback = graph_fallback if graph_fallback is not None or cuda_graphs else self.warn
        if cuda_graphs is not None and graphs_decided:
            self.cuda_graphs = bool(cuda_graphs)
        else:
            self.cuda_graphs = graphs.choose(cuda_graphs, device, self.updater, comm, parts.records,
                                             self.graph_fallback or self.warn)
        if self.cuda_graphs:  # the whole epoch as one graph when it fits, else each step
            model, loss, train = parts.model, parts.loss, parts.dataset.train
            if graphs.fits_epoch(train, device, batch_listeners=bool(self._listeners["on_batch_end"])):
                self.epoch_graph = graphs.EpochGraph(model, loss, self.updater, self.sum_reduction, train)
            else:
                self.graphed = graphs.GraphedStep(model, loss, self.updater, self.sum_reduction)

    def _graphs_failed(self, exc: Exception) -> None:
        """A CUDA graph that could not be captured or replayed: unless graphs were asked for, say why in one line
        and train eagerly from here on; asked for, the error stands."""
        if self.graph_fallback is None:
            raise exc
        self.graph_fallback(graphs.off_note(getattr(exc, "why", str(exc))))
        self.graphed = self.epoch_graph = None
        self.cuda_graphs = False

    def _emit(self, name: str, event: Any, only: str | None = None) -> None:
        """Call every listener of ``name`` (callbacks first), or those of kind ``only``."""
        control = self.control
        for kind, record, method in self._listeners[name]:
            if only is not None and kind != only:
                continue
            who = record or f"a {kind}"  # one name for it, whether it steers or fails
            control._caller = (kind, describe(who))
            control._event = name
            try:
                with blame(who, f"in {name}"):
                    method(event)
            finally:
                control._caller = control._event = None

    def _change_lr(self, request: tuple[str, float, str] | None, state: TrainState) -> None:
        """Apply a callback's ``control.set_lr`` / ``scale_lr`` (rank 0's, on every process) to the updater, to
        CUDA graphs (captured again: a replay reads the rate it was captured with) and to ``state`` (checkpointed)."""
        if request is None:
            return
        how, number, who = request
        try:
            state.lr = change_lr(self.updater, how, number)
        except TypeError as exc:
            name = describe(self._who["updater"])
            raise ComponentError(
                f"{who} called control.{how}_lr({number!r}), but {name} cannot take it: {exc}. Choose an updater "
                f"whose rate fmclf can change (a torch optimizer, or one with an lr attribute), or drop the callback."
            ) from None
        self.lr = state.lr
        for graph in (self.graphed, self.epoch_graph):
            if graph is not None:
                graph.graph = None

    def fit(self, state: TrainState | None = None) -> TrainState:
        """Train from ``state`` (a fresh start when None) to the last epoch, or until a callback stops the run.

        Whatever stops training early (Ctrl-C, divergence, a fault) is told to every listener's ``on_exception``
        first, then raised again."""
        state = state or TrainState()
        check_splits(self.parts.dataset, self._who["dataset"], len(self.classes))
        check_split_inputs(self.parts.dataset, self._who["dataset"])
        self.control.restore(state.stopped)
        self.control._at = state.epoch + 1
        try:
            return self._fit(state)
        except BaseException as exc:
            self._tell_exception(exc, state)
            raise

    def _fit(self, state: TrainState) -> TrainState:
        control = self.control
        self._emit("on_fit_start", events.FitStart(
            epochs=self.epochs, start_epoch=state.epoch + 1, num_batches=len(self.parts.dataset.train),
            classes=self.classes, device=str(self.device), run_dir=self.run_dir, config=self.config,
            history=list(state.history), control=control, splits=self.splits))
        self._change_lr(self.comm.broadcast(control.take_lr(), "agreeing on the learning rate"), state)
        confusion = None
        for epoch in range(state.epoch + 1, self.epochs + 1):
            if state.stopped is not None and state.batch == 0:  # resumed after a callback's stop
                break
            control._at, self._epoch, self._batch = epoch, epoch, None
            # a resumed epoch counts the time its first part took, so that it is timed whole (not as a fast one)
            start = self._epoch_start = time.perf_counter() - (state.seconds if state.batch else 0.0)
            train_loss, train_acc = self.train_epoch(epoch, state)
            metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
            for split in self.splits:
                result = self.evaluate_split(split)
                metrics.update({f"{split}_{k}": v for k, v in result.values.items()})
                confusion = result.confusion
            metrics.update(per_class_test_acc=per_class_accuracy(confusion, self.classes), lr=current_lr(self.updater),
                           seconds=round(time.perf_counter() - start, 6))
            state.history.append(metrics)
            state.epoch, state.batch, state.loss_sum, state.correct, state.examples = epoch, 0, 0.0, 0, 0
            state.seconds = 0.0
            event = events.EpochEnd(epoch, self.epochs, metrics, list(state.history), model=self.parts.model,
                                    lr=metrics["lr"], control=control)
            self._emit("on_epoch_end", event, only="callback")
            # rank 0 decides
            stop, lr = self.comm.broadcast((control.record(), control.take_lr()), "agreeing whether to stop")
            control.restore(stop)
            self._change_lr(lr, state)
            state.stopped = control.record()
            if self.checkpoint:
                self.checkpoint(state)
            self._emit("on_epoch_end", event, only="visualizer")
            if control.stopping:
                break
            if self.stop and epoch < self.epochs:  # after the last epoch there is nothing left to stop
                raise Interrupted(f"stopped by {self.stop.signal} after epoch {epoch}")
        if confusion is None:  # resumed after the last epoch: nothing left to train
            confusion = self.evaluate_split("test").confusion
        final = state.history[-1] if state.history else {}
        self._emit("on_fit_end", events.FitEnd(list(state.history), final, confusion.cpu().tolist(), self.classes,
                                               self.parts.model, self.run_dir, control=control))
        return state

    def _tell_exception(self, exc: BaseException, state: TrainState) -> None:
        """Tell every listener's ``on_exception`` about ``exc``; one that fails there is a warning, not the error."""
        if not self._listeners["on_exception"]:
            return
        interrupted, diverged = isinstance(exc, (Interrupted, KeyboardInterrupt)), isinstance(exc, DivergenceError)
        cause = "interrupt" if interrupted else "divergence" if diverged else "fault"
        epoch = getattr(exc, "epoch", None) or self._epoch
        batch = getattr(exc, "batch", None) if diverged else self._batch
        event = events.ExceptionRaised(exc, epoch, batch, cause, self.run_dir, list(state.history), self.control)
        for kind, record, method in self._listeners["on_exception"]:
            who = describe(record or f"a {kind}")
            self.control._caller = (kind, who)
            try:
                method(event)
            except BaseException as inner:  # noqa: BLE001 - the run's own error is the one to report
                if not component_fault(inner):
                    raise
                self.warn(f"Warning: {who} raised {type(inner).__name__} in on_exception: {inner}. "
                          f"(The error that stopped the run follows.)")
            finally:
                self.control._caller = None

    def evaluate_split(self, split: str):
        """Accuracy, loss, the metrics and the confusion matrix of the data set's ``split`` ("valid" or "test"),
        over every process's shard."""
        return self.heldout.evaluate(split, getattr(self.parts.dataset, split))

    def train_epoch(self, epoch: int, state: TrainState) -> tuple[float, float]:
        """One pass over the training batches; returns (mean loss, accuracy).

        Per batch: forward, loss, the inf/nan watch, ``zero_grad``, backward, ``comm`` gradient averaging, ``step``,
        then the metrics, summed in tensors on the device. Nothing in the loop waits for an accelerator (see
        :class:`LossWatch`); the metrics are read once, at the end.
        """
        import torch

        train = self.parts.dataset.train
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        num_batches = len(train)
        if hasattr(self.parts.model, "train"):
            self.parts.model.train()
        loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64, device=self.device)
        correct = torch.tensor(state.correct, dtype=torch.int64, device=self.device)
        first = state.batch
        watch = LossWatch(self.device, num_batches, first, lambda v, b: self._diverged(v, b, epoch, num_batches))
        batches = guarded(train, self._who["dataset"], f"while yielding training batches in epoch {epoch}")
        if first:  # resuming mid-epoch: the same order, minus what was already trained
            batches = itertools.islice(batches, first, None)
        if self.epoch_graph is not None and not first:
            try:
                return self._graphed_epoch(epoch, watch)
            except GraphFailed as exc:
                self._graphs_failed(exc)  # or raises; the graph trained nothing, so the epoch starts afresh
        b, examples = self._batches(epoch, state, batches, num_batches, watch, loss_sum, correct)
        watch.check(b)
        self._logits = None  # no batch's graph kept alive through the evaluation
        count = torch.tensor(float(examples), dtype=torch.float64, device=self.device)
        loss_sum, correct, examples = self.comm.sum(torch.stack([loss_sum, correct.double(), count])).tolist()
        return loss_sum / max(int(examples), 1), correct / max(int(examples), 1)

    def _batches(self, epoch: int, state: TrainState, batches: Iterator[Any], num_batches: int, watch: LossWatch,
                 loss_sum: Any, correct: Any) -> tuple[int, int]:
        """Train on each of ``batches`` (a replayed CUDA graph, else eagerly), adding to ``loss_sum`` and ``correct``
        in place; a stop request ends the epoch after the batch in flight, with a checkpoint. Returns (the last
        batch's number, the examples of the epoch so far)."""
        examples, first, who = state.examples, state.batch, self._who
        batch_events = bool(self._listeners["on_batch_end"])
        stop, control, classes = self.stop, self.control, len(self.classes)
        b = first
        try:
            for b, (X, y) in enumerate(batches, start=first + 1):
                if b == first + 1:  # labels out of range are the data set's fault, whoever trips over them
                    check_batch(y, who["dataset"], "training", classes)
                    check_inputs(X, who["dataset"], "training", self.input_shape)
                graphed = self.graphed  # None once a graph failed: the rest of the run is eager
                done = self._replay(graphed, X, y) if graphed is not None and graphed.fits(X, y) else None
                if done is None:
                    total, hits = self._eager_step(b, epoch, X, y, first, watch)
                else:
                    total, hits = done
                    watch.add(b, total)
                loss_sum += total.detach()
                correct += hits
                examples += y.shape[0]
                if batch_events:
                    self._emit("on_batch_end",
                               events.BatchEnd(epoch, b, num_batches, examples, loss_sum, correct, control))
                if stop and b < num_batches:
                    watch.check(b)
                    self._stop_mid_epoch(epoch, b, examples, state, loss_sum, correct)
        except BaseException:
            self._batch = b  # where it stopped, for on_exception (free in the loop: a try costs nothing)
            raise
        return b, examples

    def _replay(self, graphed: Any, X: Any, y: Any) -> tuple[Any, Any] | None:
        """One training step as a replay of the captured step (captured first if need be): (summed loss,
        correct count); None when the graph failed and training goes on eagerly (or the failure raises)."""
        try:
            if graphed.graph is None:
                graphed.capture(X, y, self._check_logits, self._check_losses)
            return graphed(X, y)
        except GraphFailed as exc:
            self._graphs_failed(exc)  # or raises; the step did not run
            return None

    def _eager_step(self, b: int, epoch: int, X: Any, y: Any, first: int, watch: LossWatch) -> tuple[Any, Any]:
        """Batch ``b`` kernel by kernel: forward, loss, the inf/nan watch, backward, gradient averaging and
        the update, each fault blamed on its component. Returns (summed loss, correct count) as tensors."""
        who, n = self._who, y.shape[0]
        at = f"on batch {b} of epoch {epoch}"
        with blame(who["model"], at):
            logits = self.parts.model(X)
        self._logits = (b, logits)  # a reference, for a divergence: did it start before the loss?
        if b == first + 1:  # before the loss sees them: wrong logits are the model's fault
            self._check_logits(logits, n)
        with blame_labels(who["loss"], at, y, who["dataset"], len(self.classes)):
            losses = self.parts.loss(logits, y)
        if b == first + 1:
            self._check_losses(losses, n, logits)
        total = losses.sum()
        watch.add(b, total)  # on the CPU: raises here, before the update
        with blame_update(who["updater"], f"while updating {at}", self.lr):
            self.updater.zero_grad()
            with blame_gradients(self.parts.records, at):
                (total if self.sum_reduction else losses.mean()).backward()
            self.comm.average_gradients(self.params)  # a lost peer raises a DistributedError: no one's fault here
            self.updater.step(n)
        return total, (logits.argmax(dim=1) == (y if y.ndim == 1 else y.argmax(dim=1))).sum()

    def _stop_mid_epoch(self, epoch: int, b: int, examples: int, state: TrainState, loss_sum: Any,
                        correct: Any) -> None:
        """A stop after batch ``b``: ``state`` keeps where the epoch stands, checkpointed, for ``--resume``."""
        state.batch, state.loss_sum, state.correct, state.examples = b, float(loss_sum), int(correct), examples
        state.seconds = round(time.perf_counter() - self._epoch_start, 6)
        state.stopped = self.control.record()  # a stop a callback asked for in this epoch holds after the resume
        if self.checkpoint:
            self.checkpoint(state)
        raise Interrupted(f"stopped by {self.stop.signal} after batch {b} of epoch {epoch}")

    def _graphed_epoch(self, epoch: int, watch: LossWatch) -> tuple[float, float]:
        """The whole epoch as one CUDA graph replay (:class:`~fmclf.train.graphs.EpochGraph`): chosen only when
        nothing listens to single batches, so no batch event is lost; a signal takes effect after the epoch. Every
        batch's loss is still checked for inf and nan by ``watch``, in one read from the device."""
        graph = self.epoch_graph
        if graph.graph is None:
            with blame(self._who["model"], f"while capturing epoch {epoch} as a CUDA graph"):
                graph.capture(self._check_logits, self._check_losses)
        graph.run(epoch)
        watch.sums = graph.sums  # the graph summed each batch's loss on the device, as the watch does there
        watch.check(graph.num_batches)
        examples = max(len(graph.batches.X), 1)
        return float(graph.loss_sum) / examples, float(graph.correct) / examples

    def _check_logits(self, logits: Any, n: int) -> None:
        """Refuse, on the first batch, logits that are not ``(n, number of classes)``: the model's fault."""
        classes = len(self.classes)
        if getattr(logits, "ndim", None) != 2 or logits.shape[0] != n:
            problem = (f"returned shape {_shape(logits)} for a batch of {n}; a model must return logits of shape "
                       f"(N, num_classes).")
        elif not logits.is_floating_point():  # a loss would trip over it (and be blamed): the model made it
            problem = (f"returned logits of dtype {logits.dtype}; a model must return floating-point logits of shape "
                       f"(N, num_classes) (float32, say). This is the model's doing: report it to its authors, or "
                       f"choose another with `fmclf plugins`.")
        elif logits.shape[1] != classes:
            problem = (f"returned {logits.shape[1]} outputs per example, but the data set has {classes} classes; a "
                       f"model must return logits of shape (N, num_classes) = ({n}, {classes}). Build it with the "
                       f"num_classes its factory is given.")
        else:
            return
        raise ComponentError(f"{describe(self._who['model'])} {problem}")

    def _check_losses(self, losses: Any, n: int, logits: Any = None) -> None:
        """Refuse, on the first batch, a loss that is not one value per example, or that cut the gradient's way
        back to ``logits`` (a detached result: backward would fail through the model too)."""
        if getattr(logits, "requires_grad", False) and not getattr(losses, "requires_grad", True):
            problem = ("returned a tensor that does not require grad although the logits it was given do: it detached "
                       "its result (.detach(), .item(), a NumPy round trip, torch.no_grad()), so no gradient can reach "
                       "the model. This is the loss's doing: report it to its authors, or choose another with "
                       "`fmclf plugins`.")
        else:
            problem = loss_shape_problem(losses, n)
        if problem:
            raise ComponentError(f"{describe(self._who['loss'])} {problem}")

    def _diverged(self, value: float, b: int, epoch: int, num_batches: int) -> None:
        """Raise the error for a batch whose summed loss was ``value`` (inf or nan) (see :func:`divergence_message`);
        when the model's logits were already inf or nan, the advice says so instead (no loss could have helped)."""
        hint = None
        seen, self._logits = self._logits, None
        if seen is not None and seen[0] == b and not bool(seen[1].detach().isfinite().all()):
            model = describe(self._who["model"])
            hint = (f"The logits of {model} were already inf or nan on that "
                    f"batch, before the loss: its weights (or its computation) overflowed. Try a smaller {flag('lr')}.")
        raise DivergenceError(
            divergence_message(value, b, num_batches, epoch, self.parts.records.get("loss"), self.parts.loss,
                               self.divergence_advice, hint=hint),
            epoch=epoch, batch=b,
        )


def divergence_message(value: float, b: int, num_batches: int, epoch: int, record: ComponentRecord | None,
                       loss: Any, advice: str, *, hint: str | None = None) -> str:
    """What a run says when batch ``b``'s summed loss was ``value`` (inf or nan): ``hint`` when given, else the
    loss's own ``divergence_hint`` when it has one, else ``advice``."""
    hint = hint or divergence_hint(loss) or advice
    return (f"training diverged: the loss became {value} on batch {b} of {num_batches} in epoch "
            f"{epoch}{f' with {record.describe()}' if record else ''}. {hint.strip()} ")


def divergence_hint(loss: Any) -> str | None:
    """The loss's own ``divergence_hint``: a string, or a function returning one (called now, so that it can name
    settings in the front end's words with :mod:`fmclf.wording`); None when it has none."""
    hint = getattr(loss, "divergence_hint", None)
    hint = hint() if callable(hint) else hint
    return hint.strip() if isinstance(hint, str) and hint.strip() else None


class LossWatch:
    """Finds the first batch of an epoch whose summed loss is inf or nan.

    On the CPU each batch's loss is read as it comes (free there), so the error is raised before the update the
    bad loss would make. On an accelerator a read would make the host wait for the device after every batch; there
    the sums go into a buffer on the device, read once when the epoch ends or stops. The batch named is the same;
    the epoch just runs to its end first.
    """

    def __init__(self, device: Any, num_batches: int, first: int, diverged: Callable[[float, int], None], *,
                 defer: bool | None = None) -> None:
        import torch

        self.diverged = diverged
        self.first = first  #: batches done before this pass (a resumed epoch)
        self.sums = None
        if defer if defer is not None else getattr(device, "type", "cpu") != "cpu":
            self.sums = torch.zeros(max(num_batches, 1), dtype=torch.float32, device=device)

    def add(self, b: int, total: Any) -> None:
        """Record batch ``b``'s (1-based) summed loss."""
        sums = self.sums
        if sums is not None and b <= len(sums):
            sums[b - 1] = total.detach()
            return
        value = total.item()  # the CPU; or a data set longer than its len()
        if not math.isfinite(value):
            self.diverged(value, b)

    def check(self, last: int) -> None:
        """Raise for the first bad batch among those recorded up to ``last``."""
        if self.sums is None or last <= self.first:
            return
        seen = self.sums[self.first : min(last, len(self.sums))]
        bad = ~seen.isfinite()
        if bool(bad.any()):  # the one read from the device per epoch
            i = int(bad.nonzero()[0, 0])
            self.diverged(float(seen[i]), self.first + i + 1)
