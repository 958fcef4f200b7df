"""What a finished run leaves to look at: curves.png (the textbook's three curves), metrics.png (every metric
and the learning rate), confusion.png, predictions.png and report.md, which links them and tabulates every
epoch. Every picture is drawn from the run's whole history: a curves.png a visualizer left behind may be
stale (a resumed run that no longer uses it)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

from .. import atomic
from ..errors import CheckpointError, WriteError
from ..numbers import is_number
from ..run import folder, processes
from ..run.folder import CONFUSION, CURVES, METRICS_PNG, PREDICTIONS, REPORT
from ..run.plan import Plan
from ..train.blame import component_fault
from . import gallery, pictures


class RunReport:
    """An internal listener the runner adds: it keeps the final model and confusion
    matrix from ``on_fit_end``; :meth:`finish` draws and writes once the weights
    and summary are safely on disk, so a drawing problem never costs a run."""

    def __init__(self, run_dir: pathlib.Path, dataset: Any, plan: Plan, *,
                 n_predictions: int = pictures.SHOWN) -> None:
        self.run_dir = pathlib.Path(run_dir)
        self.dataset = dataset
        self.plan = plan
        self.n_predictions = n_predictions
        self.end = None

    def on_fit_end(self, event) -> None:
        self.end = event

    def finish(self, seconds: float, device: Any, echo: Callable[[str], None]) -> None:
        """Write the pictures and report.md; a failure is reported, not raised."""
        if self.end is None:
            return
        try:
            drawn = self.write(seconds, device)
        except WriteError:  # a full disk, a read-only folder: an error, which --resume can mend
            raise
        except BaseException as exc:  # the run's files are complete; only the pictures are missing
            if not (isinstance(exc, Exception) or component_fault(exc)):  # the user's own interrupt; a model's
                raise  # sys.exit while drawing is a picture that failed, as any other error
            echo(f"Warning: could not draw the run's pictures ({type(exc).__name__}: {exc}); its other files are "
                 f"complete.")
            return
        echo(f"pictures: {', '.join(drawn)}; {REPORT} links them")

    def write(self, seconds: float, device: Any) -> list[str]:
        """Draw every picture and write report.md (raising what fails); returns the pictures drawn."""
        end, run_dir, config = self.end, self.run_dir, self.plan.config
        pictures.save(pictures.confusion_figure(end.confusion, end.classes), run_dir / CONFUSION)
        drawn = [CURVES, CONFUSION]
        if gallery.is_image_shape(self.dataset.input_shape):
            fig, _, _ = gallery.predictions_of(end.model, self.dataset.test, end.classes, n=self.n_predictions,
                                               title=f"{config.model} + {config.loss}: first test images")
            pictures.save(fig, run_dir / PREDICTIONS)
            drawn.append(PREDICTIONS)
        pictures.save(pictures.curves_figure(end.history, epochs=config.epochs), run_dir / CURVES)
        pictures.save(pictures.metrics_figure(end.history, epochs=config.epochs), run_dir / METRICS_PNG)
        drawn.append(METRICS_PNG)
        write_report(run_dir, self.plan, end.history, end.confusion, end.classes, seconds=seconds, device=str(device),
                     pictures_drawn=drawn, stopped=end.control.record())
        return drawn


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(map(str, r)) + " |" for r in (header, rule, *rows)]


def per_class_rows(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> list[list[str]]:
    """Per class: test accuracy, examples, and the class it is most often taken for."""
    rows = []
    for i, name in enumerate(classes):
        row = confusion[i]
        total = sum(row)
        others = [(count, classes[j]) for j, count in enumerate(row) if j != i and count]
        worst = max(others, default=None)
        rows.append([name, f"{row[i] / total:.4f}" if total else "-", str(total),
                     f"{worst[1]} ({worst[0]})" if worst else "-"])
    return rows


def _value(value: Any) -> str:
    if not is_number(value):
        return "-"
    return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"


def final_rows(final: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The final metrics as a table: a row per split (train, valid, test), a column per metric."""
    names: list[str] = []
    for key in pictures.numeric_keys(final):
        split, _, name = key.partition("_")
        if split in pictures.SPLIT_STYLES and name and name not in names:
            names.append(name)
    rows = [[split, *[_value(final.get(f"{split}_{name}")) for name in names]]
            for split in pictures.SPLIT_STYLES if any(f"{split}_{name}" in final for name in names)]
    return ["split", *names], rows


def write_report(run_dir: pathlib.Path, plan: Plan, history: Sequence[dict[str, Any]],
                 confusion: Sequence[Sequence[int]], classes: Sequence[str], *, seconds: float, device: str,
                 pictures_drawn: Sequence[str] = (), stopped: dict[str, Any] | None = None) -> pathlib.Path:
    """Write report.md: settings, who stopped the run (when a callback did), final metrics,
    per-class accuracy, every epoch's metrics and links to the pictures in the run folder."""
    run_dir = pathlib.Path(run_dir)
    config, final = plan.config, history[-1]
    first = pictures.CURVE_KEYS  # the per-epoch table starts with the textbook's three curves
    columns = [*(k for k in first if k in final), *(k for k in pictures.numeric_keys(final) if k not in first)]
    header, split_rows = final_rows(final)
    stop = ([f"Stopped after epoch {stopped['epoch']} of {config.epochs} by {stopped['by']}: {stopped['reason']}.", ""]
            if stopped else [])
    lines = [
        f"# fmclf run {run_dir.name}",
        "",
        f"{config.model} + {config.loss} + {config.updater} on {config.dataset}: "
        f"{len(history)} epoch{'s' if len(history) != 1 else ''}, "
        f"batch size {config.batch_size}, lr {config.lr}, seed {config.seed}, on {device}; "
        f"{seconds:.2f} s in this session.",
        "",
        "Components: " + "; ".join(f"{t} `{c}`" for t, c in plan.components().items()) + ".",
        f"Settings and versions are in [{folder.CONFIG}]({folder.CONFIG}); " + (
            f"`fmclf run --config {run_dir}/{folder.CONFIG}` repeats the run." if not config.from_python else
            f"{', '.join(config.from_python)} came from Python objects, so Python repeats the run "
            f"(`fmclf.fit(...)` with the same objects) and continues it (`fmclf.fit(..., resume=...)`)."),
        "",
        *stop,
        "## Final metrics",
        "",
        *_table(header, split_rows),
        "",
        *([f"Learning rate of the last step: {_value(final['lr'])}.", ""] if _value(final.get("lr")) != "-" else []),
    ]
    present = [name for name in (CURVES, METRICS_PNG, CONFUSION, PREDICTIONS)
               if name in pictures_drawn or (run_dir / name).exists()]
    captions = {CURVES: "Training curves", METRICS_PNG: "Every metric and the learning rate, per epoch",
                CONFUSION: "Confusion matrix (test set)", PREDICTIONS: "Predictions on the first test images"}
    if present:
        lines += ["## Pictures", ""]
        for name in present:
            lines += [f"### {captions[name]}", "", f"![{captions[name]}]({name})", ""]
    lines += [
        "## Per-class test accuracy",
        "",
        *_table(["class", "test acc", "examples", "most often taken for"], per_class_rows(confusion, classes), "lrrl"),
        "",
        "## Metrics per epoch",
        "",
        *_table(["epoch", *(c.replace("_", " ") for c in columns), "seconds"],
                [[r["epoch"], *(_value(r.get(c)) for c in columns), f"{r['seconds']:.2f}"] for r in history]),
        "",
        f"Every epoch's metrics, with per-class test accuracy, are in [{folder.METRICS}]({folder.METRICS}).",
        "",
    ]
    atomic.write_text(run_dir / REPORT, "\n".join(lines))
    return run_dir / REPORT


def rebuild(run_dir: pathlib.Path, host: Any, *, device: str = "cpu",
            data_root: pathlib.Path | None = None) -> list[str]:
    """Redraw report.md and every picture of the run in ``run_dir`` from what its folder holds: the
    metrics of every epoch, the saved weights (model.pt, or the last checkpoint) and the data set, on
    which the confusion matrix is computed again. Returns the pictures drawn."""
    from ..events import Control, FitEnd
    from ..run import lock
    from ..run.trained import evaluate_split, load_trained

    with lock.writing(pathlib.Path(run_dir), "redraw its report", "wait until the run has finished"):
        trained = load_trained(run_dir, host, device=device, data_root=data_root,
                               python_instead="draw its pictures from Python instead: fmclf.predict(model, data)")
        if not trained.history:
            raise CheckpointError(f"{run_dir} records no finished epoch in {folder.METRICS}, so there is nothing to "
                                  f"report yet. Train it further with `{processes.resume_command(run_dir)}`.")
        test = evaluate_split(trained, "test")
        classes = [str(c) for c in trained.parts.dataset.classes]
        report = RunReport(trained.run_dir, trained.parts.dataset, trained.plan)
        summary = folder.read_summary(trained.run_dir)
        control = Control()
        stopped = summary.get("stopped")
        if isinstance(stopped, dict) and {"by", "reason", "epoch"} <= set(stopped):
            control.restore(stopped)  # the report says who stopped the run, as it did when the run ended
        report.end = FitEnd(trained.history, trained.history[-1], test["confusion"], classes, trained.parts.model,
                            trained.run_dir, control)
        seconds = summary.get("seconds")
        if not is_number(seconds):
            seconds = sum(r["seconds"] for r in trained.history if is_number(r.get("seconds")))
        return report.write(seconds, summary.get("device") or device)
