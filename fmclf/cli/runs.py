"""``fmclf runs``: the run folders under runs/ (or DIR), newest first (imports no torch)."""

from __future__ import annotations

import json
import pathlib

import click

from ..errors import UsageError
from ..run.listing import RunInfo, find_runs
from . import cli, friendly

_HEADER = ("run", "started", "model + loss + updater", "dataset", "epochs", "test acc", "status")


def _row(info: RunInfo, root: pathlib.Path) -> tuple[str, ...]:
    path = pathlib.Path(info.path)
    name = str(path.relative_to(root)) if path != root and path.is_relative_to(root) else str(path)
    c = info.components
    trio = " + ".join(c.get(k, "?") for k in ("model", "loss", "updater"))
    epochs = f"{info.epochs_done}/{info.epochs if info.epochs is not None else '?'}"
    acc = f"{info.test_acc:.4f}" if info.test_acc is not None else "-"
    started = info.started[:16].replace("T", " ")
    status = info.status + (f" ({info.reason})" if info.status in ("running", "stopped") and info.reason else "")
    return name, started, trio, c.get("dataset", "?"), epochs, acc, status


@cli.command()
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(path_type=pathlib.Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one record per run.")
@click.pass_context
@friendly
def runs(ctx: click.Context, folder: pathlib.Path | None, as_json: bool) -> None:
    """List the run folders under runs/ (or DIR), newest first: when each started, its components,
    epochs done of those asked, the last test accuracy and its status (finished, running, interrupted,
    diverged, failed, stopped; unreadable or damaged for a folder whose files cannot be read back).
    """
    root = folder if folder is not None else pathlib.Path("runs")
    if folder is not None and not folder.is_dir():
        raise UsageError(f"{str(folder)!r} is not a folder. Pass the folder that holds run folders (default: runs/).")
    found = find_runs(root) if root.is_dir() else []
    if as_json:
        click.echo(json.dumps([info.to_json() for info in found], indent=2))
        return
    if not found:
        where = f"{root}/" if root.is_dir() else f"{root}/ (it does not exist yet)"
        click.echo(f"no run folders under {where}; `fmclf run` creates one there.")
        return
    table = [_HEADER, *(_row(info, root) for info in found)]
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADER) - 1)]
    for r in table:
        click.echo("  ".join(f"{cell:<{w}}" for cell, w in zip(r, widths)) + "  " + r[-1])
    for info in found:
        if info.status in ("diverged", "failed", "damaged", "unreadable") and info.reason:
            click.echo(f"\n{info.path} {info.status}: {info.reason[:300]}")
