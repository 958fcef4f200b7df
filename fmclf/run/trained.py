"""A run brought back from its folder (settings, components rebuilt by name, saved weights, data set on the
device asked for): what ``fmclf eval``, ``fmclf report`` and ``fmclf predict`` start from.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import CheckpointError, UsageError
from ..host.loading import PluginHost
from ..kinds import SPLITS
from . import checkpoint, folder
from .config import RunConfig
from .plan import Plan, assemble, resolve


def load_run_config(run_dir: pathlib.Path) -> RunConfig:
    """The settings a run folder's config.toml records."""
    if not folder.is_run(run_dir):
        raise UsageError(f"{str(run_dir)!r} is not a run folder (no {folder.CONFIG}). Pass the folder `fmclf run` "
                         f"printed (`fmclf runs` lists them).")
    settings, options = folder.read_config(run_dir)  # refuses unknown settings, so the call below cannot fail
    return RunConfig(**settings, options=options)


@dataclass
class Trained:
    """A run's components with its saved weights loaded."""

    run_dir: pathlib.Path
    plan: Plan
    parts: Any  #: fmclf.train.engine.Parts
    weights: pathlib.Path  #: model.pt, or checkpoint.pt for a run that has not finished
    history: list[dict[str, Any]] = field(default_factory=list)  #: metrics.jsonl


def load_trained(run_dir: pathlib.Path, host: PluginHost, *, device: str = "cpu",
                 data_root: pathlib.Path | None = None, weights: str = "final", metrics: bool = True,
                 python_instead: str = "work with it from Python instead", dataset: str | None = None,
                 dataset_options: dict[str, Any] | None = None) -> Trained:
    """Rebuild the run in ``run_dir`` on ``device`` (its data set, model, loss and, with ``metrics``, its metrics;
    nothing that shows or steers) and load its ``weights`` (:func:`fmclf.run.checkpoint.named_weights`).
    ``dataset`` (with ``dataset_options``) replaces the run's data set, to score the weights on another with the
    same classes and input shape. ``python_instead`` says what to do when the run's components were Python
    objects, which cannot be rebuilt by name."""
    from .devices import resolve_device
    from .plan import python_only

    run_dir = pathlib.Path(run_dir)
    config = load_run_config(run_dir)
    folder.check_files(run_dir)  # a link, FIFO or device where fmclf keeps a file: refused before any work
    dropped = ("visualizer.", "callback.") if metrics else ("visualizer.", "callback.", "metric.")
    config = replace(config, visualizers=["none"], device=device, callbacks=[],
                     metrics=config.metrics if metrics else [],
                     options={t: o for t, o in config.options.items() if not t.startswith(dropped)},
                     from_python=[t for t in config.from_python if not t.startswith(dropped)])
    if dataset is not None:
        trained_on = config.dataset
        config = replace(config, dataset=dataset, options={**config.options, "dataset": dict(dataset_options or {})},
                         from_python=[t for t in config.from_python if t != "dataset"])
    if config.from_python:
        raise UsageError(python_only(config, config.from_python, python_instead))
    if data_root is not None:
        dataset_options = {**config.options.get("dataset", {}), "data_root": str(data_root)}
        config = replace(config, options={**config.options, "dataset": dataset_options})
    plan = resolve(config, host)
    state, used = checkpoint.named_weights(run_dir, weights)
    parts = assemble(plan, device=resolve_device(device))
    try:
        parts.model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        if dataset is not None:
            raise UsageError(f"the weights of {run_dir} (trained on data set {trained_on!r}) do not fit a model built "
                             f"for data set {dataset!r}, which has {len(parts.dataset.classes)} classes and inputs of "
                             f"shape {tuple(parts.dataset.input_shape)}: --dataset takes a data set with the run's "
                             f"classes and input shape (a corrupted or resampled copy of its own).") from None
        raise CheckpointError(f"{used} does not fit the model {plan.records['model'].describe()} "
                              f"({str(exc).splitlines()[0][:300]}). Were the plugins changed since the run? "
                              f"{run_dir / folder.CONFIG} lists the versions that trained it.") from None
    return Trained(run_dir, plan, parts, used, folder.read_metrics(run_dir))


def evaluate_split(trained: Trained, split: str = "test") -> dict[str, Any]:
    """The saved model's metrics on one split, computed as a run computes them (:class:`fmclf.train.heldout.HeldOut`):
    ``{split}_acc``, ``{split}_loss``, ``{split}_KEY`` for each metric component, ``per_class_{split}_acc``,
    ``examples`` and ``confusion`` (rows: true class)."""
    from ..dist.comm import Solo
    from ..train.blame import blamed
    from ..train.heldout import HeldOut
    from ..train.metrics import per_class_accuracy

    parts = trained.parts
    if split not in SPLITS:  # an attribute of the data set is no split (classes, __class__)
        raise UsageError(f"{split!r} is not a split: choose {', '.join(SPLITS[:-1])} or {SPLITS[-1]}.")
    batches = getattr(parts.dataset, split, None)
    if batches is None:
        raise UsageError(f"the data set of {trained.run_dir} has no {split!r} split (a valid split is held out "
                         f"when the run chose it, e.g. with -o dataset.valid=0.1). Choose train or test.")
    classes = [str(c) for c in parts.dataset.classes]
    who = {kind: blamed(parts.records, kind) for kind in ("dataset", "model", "loss")}
    result = HeldOut(parts.model, parts.loss, parts.metrics, len(classes), Solo(), who=who).evaluate(split, batches)
    confusion = result.confusion.cpu()
    return {**{f"{split}_{key}": value for key, value in result.values.items()},
            f"per_class_{split}_acc": per_class_accuracy(confusion, classes), "examples": int(confusion.sum()),
            "confusion": confusion.tolist()}
