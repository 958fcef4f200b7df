"""Pictures of data and predictions: the work behind ``fmclf show`` and
``fmclf predict``, and the predictions grid a run leaves in its folder."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import atomic
from ..errors import UsageError
from ..host.loading import PluginHost
from ..host.options import resolve_options
from ..kinds import SPLITS
from ..run import folder, lock
from ..run.trained import load_run_config, load_trained
from ..train.blame import blame
from . import pictures


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


def predictions_of(model: Any, batches: Any, classes: Sequence[str], *, n: int = pictures.SHOWN,
                   title: str | None = None) -> tuple[Any, int, int]:
    """Predict the first ``n`` examples of ``batches`` (on the device of the model's parameters) and draw them titled
    true / predicted, the wrong ones in red (d2l's ``predict_ch3``). Returns ``(figure, right, shown)``."""
    from ..train.metrics import predict

    X, y = first_examples(batches, n)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    pred = predict(model, X.to(param.device) if param is not None else X)
    true, guessed = labels_of(y, classes), labels_of(pred, classes)
    fig = pictures.predictions_figure(X.detach().float().cpu().numpy(), true, guessed, title=title)
    return fig, sum(t == p for t, p in zip(true, guessed)), len(true)


@dataclass
class Predicted:
    """What ``fmclf predict`` drew."""

    path: pathlib.Path
    right: int
    shown: int
    weights: pathlib.Path


def predict_run(run_dir: pathlib.Path, host: PluginHost, *, n: int = pictures.SHOWN,
                out: pathlib.Path | None = None, device: str = "cpu", data_root: pathlib.Path | None = None,
                weights: str = "final") -> Predicted:
    """Rebuild a run's data set and model from its config.toml, load its saved weights (``weights``: final, or the NAME
    of RUN_DIR/NAME.pt, such as best), and draw its predictions for the first ``n`` test images."""
    run_dir = pathlib.Path(run_dir)
    load_run_config(run_dir)  # not a run folder: said before anything else
    out = pathlib.Path(out) if out is not None else run_dir / folder.PREDICTIONS
    check_picture_path(out, "--out" if out != run_dir / folder.PREDICTIONS else "the predictions")  # before any work
    # Into the run folder: as its one writer (a run that trains there draws its own predictions.png at the end).
    held = lock.writing(run_dir, "draw its predictions", "write the picture elsewhere with --out") \
        if _inside(out, run_dir) else contextlib.nullcontext()
    with held:
        fig, right, shown, used = run_predictions(run_dir, host, n=n, device=device, data_root=data_root,
                                                  weights=weights)
        pictures.save(fig, out)
    return Predicted(out, right, shown, used)


def _inside(path: pathlib.Path, folder_path: pathlib.Path) -> bool:
    try:
        return path.absolute().resolve().is_relative_to(folder_path.absolute().resolve())
    except OSError:
        return False


def check_picture_path(out: pathlib.Path, what: str = "--out") -> None:
    """Refuse, before any work, a picture path that cannot be written: a name without .png, .svg or
    .pdf, a folder, a folder that cannot take a new file (read-only, full)."""
    pictures.picture_format(out)
    if out.is_dir():
        raise UsageError(f"{what} {str(out)!r} is a folder; name the picture file, such as "
                         f"{str(out / folder.PREDICTIONS)!r}.")
    atomic.check_writable(out.parent, what=f"write {str(out)!r}", target=out)


def run_predictions(run_dir: pathlib.Path, host: PluginHost, *, n: int = pictures.SHOWN, device: str = "cpu",
                    data_root: pathlib.Path | None = None,
                    weights: str = "final") -> tuple[Any, int, int, pathlib.Path]:
    """The work of :func:`predict_run`: ``(figure, right, shown, weights file)``."""
    trained = load_trained(run_dir, host, device=device, data_root=data_root, weights=weights, metrics=False,
                           python_instead="draw its predictions from Python instead: fmclf.predict(model, data)")
    config, parts = trained.plan.config, trained.parts
    require_images(config.dataset, parts.dataset.input_shape, "predict")
    title = f"{trained.run_dir.name}: {config.model} + {config.loss} on {config.dataset} test images"
    fig, right, shown = predictions_of(parts.model, parts.dataset.test, parts.dataset.classes, n=n, title=title)
    return fig, right, shown, trained.weights


def show_samples(host: PluginHost, dataset: str, *, n: int = pictures.SHOWN, out: pathlib.Path, split: str = "train",
                 seed: int = 0, options: dict[str, Any] | None = None) -> tuple[pathlib.Path, list[str]]:
    """Draw ``n`` images of a data set's ``split`` with their text labels (d2l's ``show_images``); the training split is
    shuffled by ``seed``, as epoch 1 of a run is. Returns the path and labels."""
    check_picture_path(pathlib.Path(out))
    fig, labels = samples_of(host, dataset, n=n, split=split, seed=seed, options=options)
    pictures.save(fig, out)
    return pathlib.Path(out), labels


def samples_of(host: PluginHost, dataset: str, *, n: int = pictures.SHOWN, split: str = "train", seed: int = 0,
               options: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """The work of :func:`show_samples`: ``(figure, labels)``.

    A data-set factory that carries ``preview(*, n, split, seed, **options) -> (X, y, classes)``
    is asked only for those ``n`` examples; any other is built whole, as a run builds it."""
    record = host.registry.get("dataset", dataset)
    values = resolve_options(record, options or {})
    preview = getattr(record.factory, "preview", None)
    if callable(preview):
        with blame(record, f"while previewing its {split} images"):
            X, y, classes = preview(n=n, split=split, seed=seed, **values)
        require_images(dataset, tuple(X.shape[1:]), "show")
    else:  # built whole on the CPU, as a run builds it, and its first n examples taken
        data = load_dataset(host, dataset, batch_size=n, seed=seed, options=options)
        require_images(dataset, getattr(data, "input_shape", ()), "show")
        batches = getattr(data, split, None) if split in SPLITS else None  # an attribute is no split (classes)
        if batches is None:
            raise UsageError(f"data set {dataset!r} has no {split!r} split: choose train or test (or valid, where "
                             f"the data set holds one out).")
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(1)  # the order the first training epoch sees
        (X, y), classes = first_examples(batches, n), data.classes
    labels = labels_of(y, classes)
    title = f"{dataset}, {split} set: {len(labels)} images" + (f" (shuffled, seed {seed})" if split == "train" else "")
    return pictures.samples_figure(X.float().cpu().numpy(), labels, title=title), labels


def load_dataset(host: PluginHost, dataset: str, *, batch_size: int, seed: int = 0,
                 options: dict[str, Any] | None = None) -> Any:
    """Build the registered data set ``dataset`` on the CPU, its options checked first."""
    import torch

    from ..run.plan import call_factory

    record = host.registry.get("dataset", dataset)
    values = resolve_options(record, options or {})
    return call_factory(record, {"batch_size": batch_size, "device": torch.device("cpu"), "seed": seed, "shard": None},
                        values)
