"""``fmclf run-group SPEC``: a batched group of runs as one job (hidden: `fmclf compare` starts it).

A comparison's executor runs command lines; this is the one a group of runs that train together gets (see
:mod:`fmclf.run.group`). Imports torch only when it trains.
"""

from __future__ import annotations

import pathlib
import sys

import click

from . import cli, friendly


@cli.command("run-group", hidden=True)
@click.argument("spec", type=click.Path(path_type=pathlib.Path))
@click.pass_context
@friendly
def run_group(ctx: click.Context, spec: pathlib.Path) -> None:
    """Train the runs of the group SPEC (written by `fmclf compare`) as one computation."""
    from ..draw.report import write_report
    from ..run.group import run_group as train_group

    code = train_group(spec, ctx.obj.host(), echo=click.echo, report=write_report)
    if code:
        sys.exit(code)
