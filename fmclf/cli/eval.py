"""``fmclf eval``: a run's full metrics on its test set (or another data set's), from the saved weights."""

from __future__ import annotations

import json
import pathlib

import click

from ..kinds import SPLITS
from . import cli, friendly
from ._flags import PathArg, complete_component, dataset_options, require_run_data_root


@cli.command(name="eval")
@click.argument("run_dir", metavar="RUN", type=PathArg(recorded=False))
@click.option("--split", default="test", show_default=True, type=click.Choice(SPLITS),
              help="Which part of the data set to evaluate: test, or train (or valid, for a data set that has it).")
@click.option("--device", default="cpu", show_default=True,
              help="Device to evaluate on: cpu, cuda, cuda:N, mps or auto.")
@click.option("--data-root", type=PathArg(), default=None,
              help="Folder with the data set's files, if not where the run found them.")
@click.option("--dataset", default=None, metavar="NAME", shell_complete=complete_component("dataset"),
              help="Score the weights on data set NAME instead of the run's own (one with the same classes and input "
                   "shape, such as a corrupted copy): trained on clean images, tested on corrupted ones.")
@click.option("-o", "--option", "option_args", multiple=True, metavar="dataset.OPTION=VALUE",
              help="An option of the --dataset data set, e.g. -o dataset.severity=3. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, the confusion matrix included.")
@click.pass_context
@friendly
def eval_run(ctx: click.Context, run_dir: pathlib.Path, split: str, device: str, data_root: pathlib.Path | None,
             dataset: str | None, option_args: tuple[str, ...], as_json: bool) -> None:
    """Evaluate RUN's saved weights (model.pt, or the last checkpoint): accuracy, the run's loss,
    per-class accuracy (with the class each is most often taken for) and the run's metrics, on the
    run's data set or on another one (--dataset NAME, its options with -o dataset.OPTION=VALUE).
    """
    from ..draw.report import per_class_rows
    from ..run.trained import evaluate_split, load_trained

    host = ctx.obj.host()
    options = None
    if dataset is not None:
        options = dataset_options(host, dataset, option_args, data_root, "fmclf eval --dataset")
    elif option_args:
        raise click.UsageError("-o sets options of the --dataset data set; a run's own data set keeps the options it "
                               "trained with. Add --dataset NAME, or leave -o out.")
    else:
        require_run_data_root(host, run_dir, data_root)
    trained = load_trained(run_dir, host, device=device, data_root=None if dataset else data_root,
                           dataset=dataset, dataset_options=options)
    result = evaluate_split(trained, split)
    if as_json:
        click.echo(json.dumps({"run": str(run_dir), "weights": str(trained.weights),
                               "dataset": trained.plan.config.dataset, "split": split, **result}, indent=2))
        return
    confusion = result.pop("confusion")
    per_class = result.pop(f"per_class_{split}_acc")
    examples = result.pop("examples")
    on = f" of data set {dataset!r}" if dataset else ""
    click.echo(f"{run_dir}: weights from {trained.weights}, {examples} {split} examples{on}, on {device}")
    width = max(len(k) for k in result)
    for key, value in result.items():
        click.echo(f"  {key.replace('_', ' '):<{width}}  {value:.4f}")
    rows = per_class_rows(confusion, list(per_class))
    header = ("class", f"{split} acc", "examples", "most often taken for")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    click.echo("")
    for row in [header, *rows]:
        click.echo("  " + "  ".join(f"{c!s:<{w}}" for c, w in zip(row[:3], widths)) + "  " + row[3])
