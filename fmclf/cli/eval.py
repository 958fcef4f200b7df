"""``fmclf eval``: a run's full metrics on its test set, from the saved weights."""

from __future__ import annotations

import json
import pathlib

import click

from ..kinds import SPLITS
from . import cli, friendly
from ._flags import require_data_root


@cli.command(name="eval")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=pathlib.Path))
@click.option("--split", default="test", show_default=True, type=click.Choice(SPLITS),
              help="Which part of the data set to evaluate: test, or train (or valid, for a data set that has it).")
@click.option("--device", default="cpu", show_default=True,
              help="Device to evaluate on: cpu, cuda, cuda:N, mps or auto.")
@click.option("--data-root", type=click.Path(path_type=pathlib.Path), default=None,
              help="Folder with the data set's files, if not where the run found them.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, the confusion matrix included.")
@click.pass_context
@friendly
def eval_run(ctx: click.Context, run_dir: pathlib.Path, split: str, device: str, data_root: pathlib.Path | None,
             as_json: bool) -> None:
    """Evaluate RUN's saved weights (model.pt, or the last checkpoint): accuracy, the run's loss,
    per-class accuracy (with the class each is most often taken for) and the run's metrics.
    """
    from ..draw.report import per_class_rows
    from ..run.saved import evaluate_split, load_run_config, load_trained

    host = ctx.obj.host()
    if data_root is not None:
        require_data_root(host, load_run_config(run_dir).dataset)
    trained = load_trained(run_dir, host, device=device, data_root=data_root)
    result = evaluate_split(trained, split)
    if as_json:
        click.echo(json.dumps({"run": str(run_dir), "weights": str(trained.weights), "split": split, **result},
                              indent=2))
        return
    confusion = result.pop("confusion")
    per_class = result.pop(f"per_class_{split}_acc")
    examples = result.pop("examples")
    click.echo(f"{run_dir}: weights from {trained.weights}, {examples} {split} examples, on {device}")
    width = max(len(k) for k in result)
    for key, value in result.items():
        click.echo(f"  {key.replace('_', ' '):<{width}}  {value:.4f}")
    rows = per_class_rows(confusion, list(per_class))
    header = ("class", f"{split} acc", "examples", "most often taken for")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    click.echo("")
    for row in [header, *rows]:
        click.echo("  " + "  ".join(f"{c!s:<{w}}" for c, w in zip(row[:3], widths)) + "  " + row[3])
