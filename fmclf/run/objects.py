"""Components handed to ``fmclf.fit`` as Python objects instead of registered names.

Each object gets a :class:`~fmclf.host.registry.ComponentRecord` like a plugin's: its kind, a readable name (a
function's own name, an object's class name) and "your code" as the plugin, so every message, ``config.toml`` and the
report read as they do for named components. The record's factory hands the object back (a model function, the
chapter's ``updater(batch_size)`` and data as iterables go behind the contracts first: :mod:`fmclf.train.adapters`),
and :func:`fmclf.run.plan.resolve` takes these records in place of registry look-ups.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..errors import UsageError
from ..host.registry import ComponentRecord, PluginInfo
from ..numbers import is_whole
from ..wording import Echo

#: What plays the plugin of a component given as an object, in messages and records.
YOUR_CODE = "your code"


def readable_name(obj: Any) -> str:
    """A name for ``obj`` in messages and file names: a function's ``__name__`` (``net``,
    ``cross_entropy``), else its class name (``Sequential``, ``SGD``)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    name = getattr(obj, "__name__", None) if inspect.isroutine(obj) or isinstance(obj, type) else None
    name = name or type(obj).__name__
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")  # "<lambda>" -> "lambda"
    return name or type(obj).__name__


def record(kind: str, obj: Any, factory: Callable[..., Any], name: str | None = None) -> ComponentRecord:
    """The record of ``obj`` as a component of ``kind``, built by ``factory``."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    what = type(obj).__name__ if not inspect.isroutine(obj) else "function"
    return ComponentRecord(kind, name or readable_name(obj), factory, f"a Python object ({what}) handed to fmclf.fit",
                           PluginInfo(YOUR_CODE, str(module), dist=YOUR_CODE))


def _kind_of(obj: Any) -> str:
    return f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__}"


def model_record(model: Any, params: Sequence[Any] | None) -> ComponentRecord:
    """An ``nn.Module`` as it is, or a plain function ``net(X)`` (see
    :class:`fmclf.train.adapters.FunctionModel`) computing with ``params``."""
    import torch

    name = readable_name(model)
    if isinstance(model, torch.nn.Module):
        if params is not None:
            raise UsageError(
                f"params= goes with a plain model function; model {name!r} is an nn.Module and brings its own "
                f"parameters(), so leave params out."
            )
        return record("model", model, lambda: model, name)
    if isinstance(model, type) or not callable(model):
        raise UsageError(
            f"model must be a registered name, an nn.Module or a function net(X) that returns one row of outputs per "
            f"example; got {_kind_of(model)}{' (build one first)' if isinstance(model, type) else ''}."
        )
    from ..train.adapters import FunctionModel, check_params

    tensors = check_params(params, name) if params is not None else []
    return record("model", model, lambda: FunctionModel(model, tensors), name)


def optimizer_params(optimizer: Any) -> list[Any]:
    """The tensors a torch optimizer updates, in its order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def takes_batch_size(fn: Any) -> bool:
    """Whether ``fn`` can be called as ``fn(batch_size)``: the chapter's ``updater``."""
    if isinstance(fn, type) or not callable(fn):
        return False
    try:
        inspect.signature(fn).bind(256)
    except (TypeError, ValueError):
        return False
    return True


def optimizer_of(updater: Any) -> Any:
    """The torch optimizer an updater object is or holds (an ``(optimizer, scheduler)`` pair's), or None."""
    import torch

    first = updater[0] if isinstance(updater, tuple) and len(updater) == 2 else updater
    return first if isinstance(first, torch.optim.Optimizer) else None


def is_factory(fn: Any) -> bool:
    """Whether ``fn`` builds an updater from what fmclf passes an updater factory (``params``, ``lr``,
    ``epochs``, ``steps_per_epoch``, by name): it takes ``params``, and needs nothing else."""
    from ..kinds import core_params

    if isinstance(fn, type) or not callable(fn):
        return False
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    core = core_params("updater")
    names = {p.name for p in parameters}
    needed = {p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return "params" in names and needed <= set(core)


def updater_record(updater: Any, names: Sequence[str] = ()) -> ComponentRecord:
    """A ``torch.optim.Optimizer`` or an ``(optimizer, scheduler)`` pair, an object with ``zero_grad()`` and
    ``step(batch_size)``, the chapter's ``updater(batch_size)`` function, or a factory like a registered
    updater's (a function of ``params``, ``lr``, ``epochs``, ``steps_per_epoch``, by name, returning one of
    those); ``names`` are the registered updaters, for the message refusing anything else."""
    name = readable_name(updater[0] if optimizer_of(updater) is not None and isinstance(updater, tuple) else updater)
    if optimizer_of(updater) is not None or (
        not isinstance(updater, type) and all(callable(getattr(updater, m, None)) for m in ("zero_grad", "step"))
    ):
        return record("updater", updater, lambda: updater, name)
    if is_factory(updater):
        return record("updater", updater, updater, name)
    if takes_batch_size(updater):
        from ..train.updaters import BatchSizeFunction

        return record("updater", updater, lambda: BatchSizeFunction(updater), name)
    hint = ""
    if isinstance(updater, type):
        hint = f" (the class {updater.__name__}: build one first, such as {updater.__name__}(net.parameters(), lr=0.1))"
    elif callable(updater):
        try:
            params = list(inspect.signature(updater).parameters)
            takes = "no arguments" if not params else "(" + ", ".join(params) + ")"
            hint = (f" ({name} takes {takes}; a function of the batch size is called as "
                    f"updater(batch_size) after each backward, and a factory takes params (and lr, epochs, "
                    f"steps_per_epoch, by name) and returns an optimizer or (optimizer, scheduler))")
        except (TypeError, ValueError):
            pass
    listing = f" such as {', '.join(repr(n) for n in names)}" if names else ""
    raise UsageError(
        f"updater {name!r} is neither a torch.optim.Optimizer, an (optimizer, scheduler) pair, a function of the "
        f"batch size like the chapter's updater(batch_size), a factory of params, nor an object with zero_grad() "
        f"and step(batch_size){hint}; pass one of those, or the name of a registered updater{listing}."
    )


def loss_record(loss: Any) -> ComponentRecord:
    """Any callable ``(outputs, y) -> one loss per example``, run as it is."""
    if isinstance(loss, type) or not callable(loss):
        raise UsageError(
            f"loss must be a registered name or a callable (y_hat, y) -> one loss per example; got {_kind_of(loss)}"
            f"{' (build one first, with reduction=' + repr('none') + ')' if isinstance(loss, type) else ''}."
        )
    return record("loss", loss, lambda: loss)


def dataset_record(dataset: Any, echo: Echo) -> ComponentRecord:
    """``(train_iter, test_iter)`` of iterables of ``(X, y)`` (a ``DataLoader``, a list of batches ...),
    or a data-set object with ``train`` and ``test`` (and, if it has them, ``classes``,
    ``input_shape`` and ``valid``); see :func:`fmclf.train.adapters.user_dataset`."""
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        train, test = dataset
        extra: dict[str, Any] = {}
        name = readable_name(getattr(train, "dataset", None) or train)
    elif hasattr(dataset, "train") and hasattr(dataset, "test"):
        train, test = dataset.train, dataset.test
        extra = {k: getattr(dataset, k) for k in ("classes", "input_shape", "valid")
                 if getattr(dataset, k, None) is not None}
        name = readable_name(dataset)
    else:
        raise UsageError(
            f"dataset must be a registered name, (train_iter, test_iter) of iterables of (X, y) batches, or an "
            f"object with train and test; got {_kind_of(dataset)}."
        )
    for split, batches in (("train", train), ("test", test), ("valid", extra.get("valid"))):
        if batches is None:
            continue
        if isinstance(batches, Iterator):
            raise UsageError(
                f"the {split} batches are an iterator ({type(batches).__name__}), which is used up after one pass, "
                f"but fmclf goes over them every epoch: pass something iterable again and again, such as a "
                f"DataLoader or a list of batches."
            )
        if not isinstance(batches, Iterable):
            raise UsageError(f"the {split} batches must be an iterable of (X, y) batches; got {_kind_of(batches)}.")

    def build(*, device: Any) -> Any:
        from ..train.adapters import user_dataset

        return user_dataset(train, test, device, note=echo, **extra)

    return record("dataset", dataset, build, name)


def snake_case(name: str) -> str:
    """``NLL`` -> ``nll``, ``TopKAccuracy`` -> ``top_k_accuracy``, ``macro_f1`` as it is."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def listener_record(kind: str, obj: Any, taken: Iterable[str] = ()) -> ComponentRecord:
    """A visualizer, callback or metric given as an object; named by its class (a metric by its class
    in snake case, the name its values are recorded under: ``NLL()`` as ``valid_nll`` and ``test_nll``),
    made unique among ``taken``."""
    if isinstance(obj, type):
        raise UsageError(f"a {kind} must be a registered name or an object with event methods; got the class "
                         f"{obj.__name__} (build one first).")
    base = name = snake_case(readable_name(obj)) if kind == "metric" else readable_name(obj)
    n = 2
    while name in set(taken):
        name, n = f"{base}-{n}", n + 1
    return record(kind, obj, lambda: obj, name)


def batch_size_of(dataset: Any) -> int | None:
    """The batch size the user's own batches come in, where it is recorded (a ``DataLoader``'s)."""
    train = dataset[0] if isinstance(dataset, (tuple, list)) else getattr(dataset, "train", None)
    size = getattr(train, "batch_size", None)
    return size if is_whole(size) else None
