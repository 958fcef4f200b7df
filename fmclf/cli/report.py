"""``fmclf report``: redraw a run's report.md and pictures from its folder."""

from __future__ import annotations

import pathlib

import click

from . import cli, friendly
from ._flags import PathArg, require_run_data_root


@cli.command()
@click.argument("run_dir", metavar="RUN", type=PathArg())
@click.option("--device", default="cpu", show_default=True,
              help="Device to evaluate on for the confusion matrix and predictions: cpu, cuda, cuda:N, mps or auto.")
@click.option("--data-root", type=PathArg(), default=None,
              help="Folder with the data set's files, if not where the run found them.")
@click.pass_context
@friendly
def report(ctx: click.Context, run_dir: pathlib.Path, device: str, data_root: pathlib.Path | None) -> None:
    """Rebuild report.md and every picture of RUN from its folder: after a Ctrl-C while the pictures
    were drawn, after changing fonts or matplotlib, or for a run that has not finished.

    The curves and tables come from metrics.jsonl; the confusion matrix and predictions from the
    saved weights (model.pt, or the last checkpoint), evaluated again on the test set.
    """
    from ..draw.report import REPORT, rebuild

    host = ctx.obj.host()
    require_run_data_root(host, run_dir, data_root)
    drawn = rebuild(run_dir, host, device=device, data_root=data_root)
    click.echo(f"wrote {run_dir / REPORT} and {', '.join(drawn)}")
