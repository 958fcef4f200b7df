"""Many small models trained as one computation: the members of a batched group (see docs/comparing.md).

The members share a data set, a model architecture, a loss and an updater; they differ in seed, learning rate and the
options their components declare per model (:mod:`fmclf.host.batchable`). Their parameters are stacked, and the model
runs once per distinct seed under ``vmap`` (or its own stacked form), every member of that seed on the batch its run
alone would see (:meth:`fmclf.data.TensorBatches.permutation`). The losses of all members are one call (a batchable loss
is row-wise), their sum one backward, and the update one vectorised step.

A member whose loss becomes inf or nan is dropped at that batch, before the update (on an accelerator: found when the
epoch ends, as a run alone finds it): its parameters are zeroed and its rate set to 0, so it costs arithmetic but
changes nothing, and the others go on.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call, vmap

from ..data import TensorBatches
from ..errors import Interrupted
from ..host.registry import ComponentRecord
from .blame import blamed
from .inputs import check_split_inputs
from .labels import check_splits
from .metrics import per_class_accuracy


@dataclass
class Diverged:
    """Where a member's loss stopped being finite."""

    epoch: int
    batch: int
    batches: int
    value: float


@dataclass
class Member:
    """One member as the trainer sees it: its own model and updater (which hold its state between epochs, for its
    checkpoint), its seed, its loss, and what it has recorded."""

    model: Any
    updater: Any  #: the adapted updater its factory built, on its own model's parameters
    loss: Callable[..., Any]
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    diverged: Diverged | None = None
    confusion: Any = None  #: the last test confusion matrix
    #: ``(labels, predicted classes)`` of every test example at the last test evaluation (CPU tensors), for the
    #: run folder's test predictions (what fmclf compare's bootstrap over test examples resamples)
    predictions: Any = None


class BatchedTrainer:
    """Trains ``members`` (sorted by seed) together on ``dataset`` (its splits ``TensorBatches``).

    ``stacked`` is the updater's vectorised factory (:func:`fmclf.batchable`'s ``stacked``); ``forward`` the model's
    stacked form, ``forward(params, buffers, X) -> (K, N, classes)`` (default: ``vmap``). :meth:`epoch` trains one epoch
    and evaluates, appending a metrics row to each member still alive; :meth:`export` copies the stacked state back into
    each member's own model and updater. ``records`` (by kind, as :class:`fmclf.train.engine.Parts` holds them) name
    the data set when its labels or examples are refused, before anything trains, as a run alone refuses them.
    """

    def __init__(self, members: Sequence[Member], dataset: Any, stacked: Callable[..., Any], *, device: Any,
                 forward: Callable[..., Any] | None = None,
                 records: Mapping[str, ComponentRecord] | None = None) -> None:
        seeds = [m.seed for m in members]
        if seeds != sorted(seeds):
            raise ValueError("the members of a batched group must be sorted by seed")
        who = blamed(records or {}, "dataset")  # named as a run alone names it
        check_splits(dataset, who, len(dataset.classes))
        check_split_inputs(dataset, who)
        self.members, self.dataset, self.device, self.classes = list(members), dataset, device, list(dataset.classes)
        models = [m.model for m in members]
        self.params = {name: _stack([dict(m.named_parameters())[name] for m in models])
                       for name, _ in models[0].named_parameters()}
        self.buffers = {name: _stack([dict(m.named_buffers())[name] for m in models])
                        for name, _ in models[0].named_buffers()}
        skeleton = copy.deepcopy(models[0]).to("meta")
        # every member of one seed on the same batch: the model's own stacked form when it declares one
        self._forward = forward or vmap(lambda p, b, X: functional_call(skeleton, (p, b), (X,)), in_dims=(0, 0, None))
        firsts = [k for k, seed in enumerate(seeds) if k == 0 or seed != seeds[k - 1]]
        #: (seed, first member, end) of each seed's members
        self.groups = [(seeds[first], first, end) for first, end in zip(firsts, [*firsts[1:], len(seeds)])]
        # as many members for every seed (a grid's group): one call for all seeds, each on its own batch
        even = len({end - first for _, first, end in self.groups}) == 1
        self._seeded = vmap(self._forward, in_dims=(0, 0, 0)) if even and len(self.groups) > 1 else None
        self.updater = stacked(params=list(self.params.values()), members=[m.updater for m in members])
        self.sum_reduction = getattr(self.updater, "reduction", "sum") != "mean"
        self.losses = _loss_runs(members)
        self.alive = torch.ones(len(members), dtype=torch.bool, device=device)
        self.dropped = False  #: whether any member was dropped (read on the host: no wait for the device)
        self.defer = getattr(device, "type", "cpu") != "cpu"  # no read from an accelerator per batch

    def logits(self, X: Any, params: dict[str, Any] | None = None, buffers: dict[str, Any] | None = None) -> Any:
        """The logits of the members whose stacked ``params`` and ``buffers`` are given (default: all) on one
        batch ``X``: shape (members, N, classes), contiguous (the loss reads rows, the accuracy each row's
        largest: a stacked form may return a transposed view, copied here once)."""
        return self._forward(self.params if params is None else params, self.buffers if buffers is None else buffers,
                             X).contiguous()

    def _by_seed(self, stacked: dict[str, Any]) -> list[dict[str, Any]]:
        """``stacked`` cut into each seed's members, by ``split``: its backward is one concatenation, where
        slicing would add a zero-filled gradient of the whole stack per seed."""
        sizes = [end - first for _, first, end in self.groups]
        cut = {n: t.split(sizes) for n, t in stacked.items()}
        return [{n: pieces[g] for n, pieces in cut.items()} for g in range(len(sizes))]

    def _loss(self, logits: Any, y: Any) -> Any:
        """Every member's per-example losses, (K, N): one call per distinct loss, on its members' rows."""
        K, N, C = logits.shape
        if len(self.losses) == 1:
            return self.losses[0][0](logits.reshape(K * N, C), y.reshape(K * N)).reshape(K, N)
        out = torch.empty((K, N), dtype=logits.dtype, device=logits.device)
        for fn, index in self.losses:
            rows = len(index)
            out[index] = fn(logits[index].reshape(rows * N, C), y[index].reshape(rows * N)).reshape(rows, N).to(
                out.dtype)
        return out

    def epoch(self, epoch: int, stop: Any = None) -> None:
        """Train epoch ``epoch`` and evaluate; each living member gets its metrics row. ``stop`` (truthy
        once a signal asked) ends the epoch after the batch in flight: raises KeyboardInterrupt-free
        :class:`fmclf.errors.Interrupted` and leaves every member at its last epoch's state."""
        start = time.perf_counter()
        train = self.dataset.train
        n, bs = len(train.X), train.batch_size
        batches = len(train)
        K = len(self.members)
        trained = int(self.alive.sum())
        orders, labels = self._orders(epoch)
        loss_sum = torch.zeros(K, dtype=torch.float64, device=self.device)
        correct = torch.zeros(K, dtype=torch.int64, device=self.device)
        watch = torch.zeros((batches, K), dtype=torch.float32, device=self.device) if self.defer else None
        for b in range(batches):
            lo, hi = b * bs, min((b + 1) * bs, n)
            logits, y = self._batch(orders, labels, lo, hi)
            sums = self._loss(logits, y).sum(1)
            if watch is not None:
                watch[b] = sums.detach()
            else:
                bad = ~torch.isfinite(sums.detach()) & self.alive
                if bool(bad.any()):
                    self._drop(bad, sums, epoch, b + 1, batches)
            objective = (sums if self.sum_reduction else sums / (hi - lo)).sum()
            self.updater.zero_grad()
            objective.backward()
            if self.dropped:
                self._clean_gradients()
            self.updater.step(hi - lo)
            with torch.no_grad():
                loss_sum += sums.detach().double()
                correct += (logits.argmax(dim=2) == y).sum(dim=1)
            if stop and b + 1 < batches:
                raise Interrupted(f"stopped by {stop.signal} after batch {b + 1} of epoch {epoch}")
        if watch is not None:
            self._drop_watched(watch, epoch, batches)
        self._check_weights(epoch, batches)
        self._record(epoch, loss_sum, correct, n, start, trained)

    def _orders(self, epoch: int) -> tuple[Any, Any]:
        """Each seed's order of the training rows in epoch ``epoch`` (the order its run alone sees), and its
        labels in that order: two (seeds, examples) tensors on the data's device."""
        train = self.dataset.train
        orders = torch.stack([TensorBatches(train.X, train.y, train.batch_size, shuffle=train.shuffle, seed=seed)
                              .permutation(epoch) for seed, _, _ in self.groups]).to(train.X.device)
        return orders, train.y.index_select(0, orders.reshape(-1)).reshape(orders.shape)

    def _batch(self, orders: Any, labels: Any, lo: int, hi: int) -> tuple[Any, Any]:
        """Every member's logits (K, N, classes) on rows ``lo:hi`` of its seed's order, and their labels (K, N): with
        as many members for every seed (a grid), the model's stacked form runs once, mapped over the seeds
        (``vmap``), on all seeds' batches gathered at once; otherwise once per seed, on that seed's batch."""
        train = self.dataset.train
        S, N = len(self.groups), hi - lo
        X = train.X.index_select(0, orders[:, lo:hi].reshape(-1))
        y = labels[:, lo:hi]
        if self._seeded is not None:
            M = len(self.members) // S
            params = {k: t.view(S, M, *t.shape[1:]) for k, t in self.params.items()}
            buffers = {k: t.view(S, M, *t.shape[1:]) for k, t in self.buffers.items()}
            logits = self._seeded(params, buffers, X.view(S, N, *X.shape[1:]))
            logits = logits.reshape(len(self.members), N, -1).contiguous()
            return logits, y.unsqueeze(1).expand(S, M, N).reshape(-1, N)
        parts, ys = [], []
        params, buffers = self._by_seed(self.params), self._by_seed(self.buffers)
        for g, (_, first, end) in enumerate(self.groups):
            parts.append(self.logits(X[g * N : (g + 1) * N], params[g], buffers[g]))
            ys.append(y[g].expand(end - first, N))
        return (parts[0], ys[0]) if len(parts) == 1 else (torch.cat(parts), torch.cat(ys))

    def _drop_watched(self, watch: Any, epoch: int, batches: int) -> None:
        """On an accelerator: drop each member whose loss was not finite on some batch (``watch``: (batches, K)),
        naming its first such batch, as a run alone does when its epoch ends."""
        bad = ~torch.isfinite(watch) & self.alive
        for k in bad.any(dim=0).nonzero().flatten().tolist():
            b = int(bad[:, k].nonzero()[0, 0])
            mask = torch.zeros_like(self.alive)
            mask[k] = True
            self._drop(mask, watch[b].double(), epoch, b + 1, batches)

    def _record(self, epoch: int, loss_sum: Any, correct: Any, n: int, start: float, trained: int) -> None:
        """Evaluate, and append epoch ``epoch``'s metrics row to each living member's history (the epoch began at
        ``start``, a ``time.perf_counter`` reading, with ``trained`` members alive). A row's ``seconds`` is the member's
        share of the group's epoch, and ``group`` the whole and the count (docs/comparing.md says why)."""
        rows = self._evaluate()
        lrs = self.updater.lrs()
        train_loss = (loss_sum / max(n, 1)).tolist()
        train_acc = (correct.double() / max(n, 1)).tolist()
        seconds = time.perf_counter() - start
        group = {"seconds": round(seconds, 6), "members": trained}
        for k, member in enumerate(self.members):
            if member.diverged is not None:
                continue
            metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss[k], "train_acc": train_acc[k]}
            for split, (acc, loss, confusion) in rows.items():
                metrics.update({f"{split}_acc": acc[k], f"{split}_loss": loss[k]})
                member.confusion = confusion[k]
            metrics.update(per_class_test_acc=per_class_accuracy(member.confusion, self.classes), lr=lrs[k],
                           seconds=round(seconds / max(trained, 1), 6), group=dict(group))
            member.history.append(metrics)

    def evaluate_test(self) -> None:
        """Set each living member's test confusion matrix (a group resumed after its last epoch trains none)."""
        confusion = self._evaluate()["test"][2]
        for k, member in enumerate(self.members):
            if member.diverged is None:
                member.confusion = confusion[k]

    def _drop(self, bad: Any, sums: Any, epoch: int, batch: int, batches: int) -> None:
        """Members ``bad`` diverged on this batch: record where, zero their parameters, stop their updates."""
        values = sums.detach().double().tolist()
        for k in bad.nonzero().flatten().tolist():
            self.members[k].diverged = Diverged(epoch, batch, batches, values[k])
            self.updater.drop(k)
        self.alive &= ~bad
        self.dropped = True
        with torch.no_grad():
            for t in self.params.values():
                t[bad] = 0.0

    def _clean_gradients(self) -> None:
        """A dropped member's gradient (nan on the batch it diverged) must not reach any update."""
        for t in self.params.values():
            if t.grad is not None:
                keep = self.alive.reshape(-1, *([1] * (t.ndim - 1)))
                t.grad = torch.where(keep, t.grad, torch.zeros_like(t.grad))

    def _check_weights(self, epoch: int, batches: int) -> None:
        """A member whose weights overflowed although its losses stayed finite diverged too (as
        :func:`fmclf.run.checkpoint.check_weights` finds for a run alone)."""
        finite = torch.ones_like(self.alive)
        for t in self.params.values():
            finite &= torch.isfinite(t.detach().reshape(len(self.members), -1)).all(dim=1)
        bad = ~finite & self.alive
        if bool(bad.any()):
            self._drop(bad, torch.full((len(self.members),), math.nan), epoch, 0, batches)

    def _evaluate(self) -> dict[str, tuple[list[float], list[float], Any]]:
        """Per split (valid when the data set has it, then test): each member's accuracy, mean loss and
        confusion matrix (K, C, C), every member on the same batches."""
        C, K = len(self.classes), len(self.members)
        out = {}
        splits = (["valid"] if getattr(self.dataset, "valid", None) is not None else []) + ["test"]
        with torch.no_grad():
            for split in splits:
                flat = torch.zeros((K, C * C), dtype=torch.int64, device=self.device)  # each member's confusion
                loss_sum = torch.zeros(K, dtype=torch.float64, device=self.device)
                count = 0
                labels, predicted = [], []
                for X, y in getattr(self.dataset, split):
                    logits = self.logits(X)
                    N = len(y)
                    yy = y.expand(K, N)
                    loss_sum += self._loss(logits, yy).double().sum(dim=1)
                    guess = logits.argmax(dim=2)
                    cells = yy * C + guess
                    flat.scatter_add_(1, cells, torch.ones_like(cells))
                    if split == "test":
                        labels.append(y.to(torch.int16))
                        predicted.append(guess.to(torch.int16))
                    count += N
                if split == "test" and labels:
                    ys, guesses = torch.cat(labels).cpu(), torch.cat(predicted, dim=1).cpu()
                    for k, member in enumerate(self.members):
                        if member.diverged is None:
                            member.predictions = (ys, guesses[k])
                confusion = flat.reshape(K, C, C)
                acc = (confusion.diagonal(dim1=1, dim2=2).sum(dim=1).double() / max(count, 1)).tolist()
                out[split] = (acc, (loss_sum / max(count, 1)).tolist(), confusion)
        return out

    def export(self) -> None:
        """Copy each living member's parameters (and its updater's state) back into its own objects."""
        with torch.no_grad():
            for k, member in enumerate(self.members):
                if member.diverged is not None:
                    continue
                own = {**dict(member.model.named_parameters()), **dict(member.model.named_buffers())}
                for name, t in [*self.params.items(), *self.buffers.items()]:
                    own[name].copy_(t[k])
                self.updater.export(k)


def _stack(tensors: Sequence[Any]) -> Any:
    """The members' tensors stacked along a new first dimension (a leaf, requiring grad as they do), each
    member's block laid out as its own tensor is: a weight stored transposed stays transposed, so the model's
    stacked form multiplies all members the way its single form multiplies one (``torch.stack`` would
    make every block row-major, and the stacked product would need a copy per batch, or go the slow way)."""
    first = tensors[0]
    outer = sorted(range(first.ndim), key=lambda d: -first.stride(d))  # its dimensions, outermost in memory first
    stacked = torch.stack([t.detach().permute(outer) for t in tensors])
    back = [0, *(1 + outer.index(d) for d in range(first.ndim))]
    return stacked.permute(back).detach().requires_grad_(first.requires_grad)


def _loss_runs(members: Sequence[Member]) -> list[tuple[Callable[..., Any], Any]]:
    """The distinct loss objects and the members each serves (one object, one call)."""
    runs: dict[int, tuple[Callable[..., Any], list[int]]] = {}
    for k, m in enumerate(members):
        runs.setdefault(id(m.loss), (m.loss, []))[1].append(k)
    device = members[0].model and next(iter(members[0].model.parameters())).device
    return [(fn, torch.tensor(index, device=device)) for fn, index in runs.values()]
