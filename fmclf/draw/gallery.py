"""Pictures of data and predictions: the work behind ``fmclf show`` and
``fmclf predict``, and the predictions grid a run leaves in its folder."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..train.blame import blame
from ..host.loading import PluginHost
from ..host.options import resolve_options
from ..run.saved import load_run_config, load_trained  # noqa: F401 - load_run_config: the CLI reads it here
from . import pictures

PREDICTIONS = "predictions.png"


def is_image_shape(shape: Sequence[int]) -> bool:
    """Whether inputs of this shape are images: ``(1|3, H, W)``."""
    return len(shape) == 3 and int(shape[0]) in (1, 3)


def require_images(name: str, shape: Sequence[int], command: str) -> None:
    """A clear error when a data set's inputs are not images."""
    if not is_image_shape(shape):
        raise UsageError(
            f"data set {name!r} has inputs of shape {tuple(shape)}, not images of shape (1 or 3, H, W), "
            f"so `fmclf {command}` cannot draw them. It draws image data sets only."
        )


def first_examples(batches: Any, n: int) -> tuple[Any, Any]:
    """The first ``n`` examples of an iterable of ``(X, y)`` batches (fewer if it holds fewer)."""
    import torch

    xs, ys, have = [], [], 0
    for X, y in batches:
        xs.append(X[: n - have])
        ys.append(y[: n - have])
        have += len(xs[-1])
        if have >= n:
            break
    if not xs:
        raise UsageError("the data set yielded no examples to draw.")
    y = torch.cat(ys)
    return torch.cat(xs), (y.argmax(dim=1) if y.ndim == 2 else y)  # probability targets: the likeliest class


def labels_of(indices: Any, classes: Sequence[str]) -> list[str]:
    """d2l's ``get_fashion_mnist_labels``: class indices to text labels."""
    return [str(classes[int(i)]) for i in indices]


def write_predictions(model: Any, batches: Any, classes: Sequence[str], path: pathlib.Path, *, n: int = 18,
                      title: str | None = None) -> tuple[int, int]:
    """Predict the first ``n`` examples of ``batches`` and draw them titled true / predicted,
    the wrong ones in red (d2l's ``predict_ch3``). Returns ``(right, shown)``."""
    from ..train.metrics import predict

    X, y = first_examples(batches, n)
    pred = predict(model, X)
    true, guessed = labels_of(y, classes), labels_of(pred, classes)
    pictures.save(pictures.predictions_figure(X.detach().float().cpu().numpy(), true, guessed, title=title), path)
    return sum(t == p for t, p in zip(true, guessed)), len(true)


@dataclass
class Predicted:
    """What ``fmclf predict`` drew."""

    path: pathlib.Path
    right: int
    shown: int
    weights: pathlib.Path


def predict_run(run_dir: pathlib.Path, host: PluginHost, *, n: int = 18, out: pathlib.Path | None = None,
                device: str = "cpu", data_root: pathlib.Path | None = None) -> Predicted:
    """Rebuild a run's data set and model from its config.toml, load its saved weights,
    and draw its predictions for the first ``n`` test images."""
    run_dir = pathlib.Path(run_dir)
    out = pathlib.Path(out) if out is not None else run_dir / PREDICTIONS
    pictures.picture_format(out)  # a bad name fails before the data set loads
    trained = load_trained(run_dir, host, device=device, data_root=data_root)
    config, parts = trained.plan.config, trained.parts
    require_images(config.dataset, parts.dataset.input_shape, "predict")
    right, shown = write_predictions(parts.model, parts.dataset.test, parts.dataset.classes, out, n=n,
                                     title=f"{run_dir.name}: {config.model} + {config.loss} on {config.dataset} test images")
    return Predicted(out, right, shown, trained.weights)


def show_samples(host: PluginHost, dataset: str, *, n: int = 18, out: pathlib.Path, split: str = "train", seed: int = 0,
                 options: dict[str, Any] | None = None) -> tuple[pathlib.Path, list[str]]:
    """Draw ``n`` images of a data set's ``split`` with their text labels (d2l's
    ``show_images``); the training split is shuffled by ``seed``, as epoch 1 of a run is.
    Returns the path and labels.

    A data-set factory that carries ``preview(*, n, split, seed, **options) -> (X, y, classes)``
    is asked only for those ``n`` examples; any other is built whole, as a run builds it."""
    record = host.registry.get("dataset", dataset)
    values = resolve_options(record, options or {})
    pictures.picture_format(out)
    preview = getattr(record.factory, "preview", None)
    if callable(preview):
        with blame(record, f"while previewing its {split} images"):
            X, y, classes = preview(n=n, split=split, seed=seed, **values)
        shape = tuple(X.shape[1:])
    else:
        X, y, classes, shape = _first_of_built(record, values, n=n, split=split, seed=seed)
    require_images(dataset, shape, "show")
    labels = labels_of(y, classes)
    title = f"{dataset}, {split} set: {len(labels)} images" + (f" (shuffled, seed {seed})" if split == "train" else "")
    pictures.save(pictures.samples_figure(X.float().cpu().numpy(), labels, title=title), out)
    return pathlib.Path(out), labels


def _first_of_built(record: Any, values: dict[str, Any], *, n: int, split: str, seed: int) -> tuple[Any, Any, Any, Any]:
    """Build the data set as a run would (on the CPU) and take the first ``n`` examples of ``split``."""
    import torch

    from ..run.plan import call_factory

    data = call_factory(record, {"batch_size": n, "device": torch.device("cpu"), "seed": seed, "shard": None}, values)
    shape = getattr(data, "input_shape", ())
    require_images(record.name, shape, "show")
    batches = getattr(data, split)
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(1)  # the order the first training epoch sees
    X, y = first_examples(batches, n)
    return X, y, data.classes, shape
