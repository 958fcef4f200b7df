"""A finished (or interrupted) run brought back from its folder: the settings from
config.toml, the components rebuilt by name, the saved weights loaded, the data
set on the device asked for. What ``fmclf eval``, ``fmclf report`` and
``fmclf predict`` start from.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, UsageError
from ..host.loading import PluginHost
from ..kinds import BY_NAME
from . import checkpoint, folder
from .config import RunConfig, load_config
from .plan import Plan, assemble, build, resolve


def load_run_config(run_dir: pathlib.Path) -> RunConfig:
    """The settings a run folder's config.toml records."""
    path = pathlib.Path(run_dir) / folder.CONFIG
    if not path.is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run folder (no {folder.CONFIG}). Pass the folder `fmclf run` "
                         f"printed (`fmclf runs` lists them).")
    settings, options = load_config(path)  # refuses unknown settings, so the call below cannot fail
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
                 data_root: pathlib.Path | None = None) -> Trained:
    """Rebuild the run in ``run_dir`` (no visualizers) on ``device`` and load its weights."""
    from .devices import resolve_device

    run_dir = pathlib.Path(run_dir)
    config = load_run_config(run_dir)
    config.visualizers, config.device = ["none"], device
    config.options = {t: o for t, o in config.options.items() if not t.startswith("visualizer.")}
    if data_root is not None:
        config.options.setdefault("dataset", {})["data_root"] = str(data_root)
    plan = resolve(config, host)
    state, weights = checkpoint.final_weights(run_dir)
    parts = assemble(plan, device=resolve_device(device))
    try:
        parts.model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{weights} does not fit the model {plan.records['model'].describe()} ({str(exc).splitlines()[0][:300]}). "
            f"Were the plugins changed since the run? {run_dir / folder.CONFIG} lists the versions that trained it."
        ) from None
    return Trained(run_dir, plan, parts, weights, folder.read_metrics(run_dir))


def evaluate_split(trained: Trained, split: str = "test") -> dict[str, Any]:
    """The saved model's metrics on one split of the data set: ``{split}_acc``, ``{split}_loss``
    (the run's own loss, averaged over the examples), ``per_class_{split}_acc``, ``examples``,
    ``confusion`` (rows: true class), and ``{split}_NAME`` for each metric component the run chose."""
    import torch

    from ..train.metrics import per_class_accuracy

    parts = trained.parts
    batches = getattr(parts.dataset, split, None)
    if batches is None:
        raise UsageError(f"the data set of {trained.run_dir} has no {split!r} split.")
    classes = [str(c) for c in parts.dataset.classes]
    n = len(classes)
    metrics = _metric_components(trained, n)
    model, loss_fn = parts.model, parts.loss
    model.eval()
    confusion = torch.zeros(n, n, dtype=torch.int64)
    loss_sum, examples = 0.0, 0
    with torch.no_grad():
        for X, y in batches:
            logits = model(X)
            loss_sum += float(loss_fn(logits, y).double().sum())
            label = y.argmax(dim=1) if y.ndim == 2 else y
            pred = logits.argmax(dim=1)
            confusion += torch.bincount((label * n + pred).cpu(), minlength=n * n).reshape(n, n)
            examples += len(label)
            for _, metric in metrics:
                metric.update(logits, y)
    if not examples:
        raise UsageError(f"the {split} split of {trained.run_dir}'s data set holds no examples.")
    out: dict[str, Any] = {
        f"{split}_acc": float(confusion.diagonal().sum()) / examples,
        f"{split}_loss": loss_sum / examples,
        f"per_class_{split}_acc": per_class_accuracy(confusion, classes),
        "examples": examples,
    }
    for name, metric in metrics:
        value = metric.compute()
        if isinstance(value, dict):
            out.update({f"{split}_{name}_{k}": float(v) for k, v in value.items()})
        else:
            out[f"{split}_{name}"] = float(value)
    out["confusion"] = confusion.tolist()
    return out


def _metric_components(trained: Trained, num_classes: int) -> list[tuple[str, Any]]:
    """The run's metric components (a kind some fmclf versions have), built fresh."""
    plan = trained.plan
    built = []
    for target, record in plan.records.items():
        if record.kind != "metric" or record.kind not in BY_NAME:
            continue
        metric = build(record, {"num_classes": num_classes}, plan.options[target])
        if hasattr(metric, "reset"):
            metric.reset()
        built.append((record.name, metric))
    return built
