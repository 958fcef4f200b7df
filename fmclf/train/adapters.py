"""Python objects behind the component contracts: what ``fmclf.fit`` hands the engine when it is given a plain model
function, or data as iterables of ``(X, y)``, instead of registered names.

Nothing here copies what the user made: a model function keeps computing with its own tensors, and a data loader keeps
yielding its own batches; they are only moved to the run's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from ..errors import UsageError


class FunctionModel(torch.nn.Module):
    """A plain model function, like the chapter's ``net(X)``, as an ``nn.Module`` whose parameters are the very tensors
    the function computes with (``params=[W, b]``).

    The chapter's ``W`` and ``b`` are plain leaf tensors, not ``nn.Parameter``s, and its ``net`` and ``updater`` use
    them by identity: wrapping must keep those objects, not copies. They are put into the module's parameter table as
    they are, so ``parameters()``, ``state_dict()``, ``load_state_dict()`` (a checkpoint restores them in place) and
    ``.to(device)`` (which moves them in place, as it does a module's parameters) work on them.
    """

    def __init__(self, fn: Callable[[Any], Any], params: Sequence[Any] = ()) -> None:
        super().__init__()
        self.fn = fn
        for name, tensor in zip(parameter_names(fn, params), params):
            self._parameters[name] = tensor  # as it is: register_parameter would demand an nn.Parameter

    def forward(self, X: Any) -> Any:
        return self.fn(X)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


def parameter_names(fn: Callable[[Any], Any], params: Sequence[Any]) -> list[str]:
    """Names for ``params`` in checkpoints: the names ``fn`` reads them by (``W``, ``b``) where
    they can be found among the globals and closure of ``fn``, else ``param0``, ``param1`` ..."""
    scope: dict[str, Any] = dict(getattr(fn, "__globals__", {}))
    code = getattr(fn, "__code__", None)
    for name, cell in zip(getattr(code, "co_freevars", ()), getattr(fn, "__closure__", None) or ()):
        with contextlib.suppress(ValueError):  # an empty cell has no contents
            scope[name] = cell.cell_contents
    read = set(getattr(code, "co_names", ())) | set(getattr(code, "co_freevars", ()))
    by_id: dict[int, str] = {}
    # Names the function reads first, then any other; never a private one (a notebook's globals hold _1, _2 ...).
    for name in sorted(scope, key=lambda k: k not in read):
        if isinstance(scope[name], torch.Tensor) and not name.startswith("_"):
            by_id.setdefault(id(scope[name]), name)
    names: list[str] = []
    for i, tensor in enumerate(params):
        name = by_id.get(id(tensor), "")
        if not name.isidentifier() or name in names or hasattr(torch.nn.Module, name) or name == "fn":
            name = f"param{i}"
        names.append(name)
    return names


def check_params(params: Any, model_name: str) -> list[Any]:
    """``params`` as a list of tensors; a clear error for anything else."""
    if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
        raise UsageError(f"params must be a list of the tensors model {model_name!r} computes with, such as "
                         f"params=[W, b]; got {type(params).__name__}.")
    params = list(params)
    if bad := [type(p).__name__ for p in params if not isinstance(p, torch.Tensor)]:
        raise UsageError(f"params must hold tensors (the ones model {model_name!r} computes with, such as [W, b]); "
                         f"it holds a {bad[0]}.")
    return params


class OnDevice:
    """An iterable of ``(X, y)`` batches (a ``DataLoader``, a list ...) whose batches are moved to
    ``device`` as they come; ``len()`` is the iterable's own, or counted by one pass when it has none."""

    def __init__(self, batches: Any, device: Any) -> None:
        self.batches, self.device = batches, device
        # no len(): one pass to count (the engine needs it every epoch)
        self.length = len(batches) if has_len(batches) else sum(1 for _ in batches)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Passed on to batches that take it (a sampler's order per epoch)."""
        if callable(getattr(self.batches, "set_epoch", None)):
            self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for item in self.batches:
            try:
                X, y = item[0], item[1]
            except (TypeError, IndexError, KeyError):
                raise TypeError(f"a batch must be a pair (X, y); got {type(item).__name__}") from None
            X, y = _on(X, "X", self.device), _on(y, "y", self.device)
            if not len(y) or X.ndim == 0 or len(X) != len(y):
                raise UsageError(f"a batch holds {len(X) if X.ndim else 0} examples (X of shape {tuple(X.shape)}) and "
                                 f"{len(y)} labels (y of shape {tuple(y.shape)}); every batch must hold the same "
                                 f"number of examples and labels, at least one. Leave empty batches out of your data.")
            yield X, y


def _on(value: Any, name: str, device: Any) -> torch.Tensor:
    """``value`` (a tensor or a NumPy array) on ``device``; a clear error for what cannot be one."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            inner = type(value[0]).__name__ if isinstance(value, (list, tuple)) and value else "?"
            raise UsageError(f"a batch's {name} is a {type(value).__name__} (of {inner}), which fmclf cannot turn "
                             f"into one tensor ({' '.join(str(exc).split())[:200]}). Give each batch as tensors (X of "
                             f"shape (N, ...), y of shape (N,)): torch.stack a list of tensors, torch.tensor a list of "
                             f"numbers, or use a DataLoader.") from None
    return value.to(device, non_blocking=True)


def has_len(batches: Any) -> bool:
    """Whether ``len(batches)`` works (a ``DataLoader`` over an ``IterableDataset`` raises)."""
    try:
        len(batches)
    except TypeError:
        return False
    return True


def classes_of(*sources: Any) -> list[str] | None:
    """A data set's class names, where they are kept: a ``classes`` list on the object itself, or on
    the ``dataset`` a ``DataLoader`` reads (torchvision's data sets have one)."""
    for source in sources:
        for holder in (source, getattr(source, "dataset", None)):
            names = getattr(holder, "classes", None)
            if isinstance(names, (list, tuple)) and names:
                return [str(c) for c in names]
    return None


def count_classes(batches: Iterable[Any]) -> int:
    """The number of classes the labels of ``batches`` show: the largest index plus one (or the
    width of probability targets)."""
    top = -1
    for item in batches:
        y = torch.as_tensor(item[1])  # a tensor as it is
        if y.ndim == 2:
            return int(y.shape[1])
        if y.numel():
            if int(y.min()) < 0:  # no class count can be read from it; the engine's label check says the rest
                raise UsageError(f"the labels include {int(y.min())}, but labels are class indices from 0 to C-1 (or "
                                 f"probability targets of shape (N, C)): fix the labels of your data.")
            top = max(top, int(y.max()))
    if top < 0:
        raise UsageError("the test labels hold no class index, so fmclf cannot tell how many classes there are: "
                         "pass classes=[...] with your data set, or give test batches with labels.")
    return top + 1


class ObjectDataset:
    """A data set made of the user's own objects: ``train`` and ``test`` on the run's device, with
    ``classes`` and ``input_shape`` found where they can be (see :func:`user_dataset`)."""

    def __init__(self, train: OnDevice, test: OnDevice, classes: Sequence[str], input_shape: tuple[int, ...],
                 source: str, valid: OnDevice | None = None) -> None:
        self.train, self.test, self.classes, self.input_shape, self.source = train, test, classes, input_shape, source
        if valid is not None:
            self.valid = valid


def user_dataset(train: Any, test: Any, device: Any, *, classes: Sequence[str] | None = None,
                 input_shape: Sequence[int] | None = None, valid: Any = None,
                 note: Callable[[str], None] = print) -> ObjectDataset:
    """The contract's data set from the user's iterables of ``(X, y)``: batches moved to ``device``, ``len()`` counted
    when missing, the class names from ``classes`` or the data (else ``"0"`` .. ``"C-1"``, C from the test labels), the
    input shape from the first test batch. ``note`` says what was inferred."""
    if not has_len(train):
        note("Note: the training batches have no len(); fmclf counts them with one pass before training.")
    on_train, on_test = OnDevice(train, device), OnDevice(test, device)
    if not len(on_train):
        raise UsageError("the training batches are empty: there is nothing to train on, so give some.")
    first = next(iter(on_test), None)
    if first is None:
        raise UsageError("the test batches are empty: fmclf evaluates on them after every epoch, so give some.")
    shape = tuple(int(d) for d in (input_shape if input_shape is not None else first[0].shape[1:]))
    names = list(classes) if classes is not None else classes_of(train, test)
    if names is None:
        k = count_classes(test)
        names = [str(i) for i in range(k)]
        note(f"Note: your data keeps no class names (a `classes` list), so fmclf calls the {k} classes its test "
             f"labels show {names[0]} to {names[-1]}.")
    source = f"your {type(getattr(train, 'dataset', None) or train).__name__}, {len(on_train)} batches an epoch"
    return ObjectDataset(on_train, on_test, names, shape, source,
                         OnDevice(valid, device) if valid is not None else None)
