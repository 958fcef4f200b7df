"""``fmclf bench loss``: every loss on the stress grid and timed by pytest-benchmark, beside torch's
``F.cross_entropy``. Imports torch and pytest only when it runs."""

from __future__ import annotations

import json
import pathlib

import click

from ..errors import UsageError
from . import cli, friendly
from ._commandline import command_line


@cli.group()
def bench() -> None:
    """Benchmark components: `fmclf bench loss` (stability and speed of losses)."""


@bench.command("loss")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--shapes", "shape_args", multiple=True, metavar="NxC[,NxC...]",
              help="Time these shapes too (beside 256x10, 4096x10, 4096x1000), e.g. --shapes 16384x32000. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (every case of every loss).")
@click.option("--device", default="cpu", show_default=True,
              help="Device to run the losses on: cpu, cuda, cuda:N or mps.")
@click.option("--threads", type=int, default=None, help="torch's CPU threads while timing. [default: one per core]")
@click.option("--speed/--no-speed", default=True, show_default=True,
              help="Time forward + backward with pytest-benchmark.")
@click.option("--stability/--no-stability", default=True, show_default=True, help="Run the stress grid.")
@click.option("--max-time", type=float, default=1.0, show_default=True,
              help="pytest-benchmark's time per loss and shape, in seconds.")
@click.option("--min-rounds", type=int, default=5, show_default=True,
              help="pytest-benchmark's least number of rounds per loss and shape.")
@click.option("--update", "update_files", multiple=True, type=click.Path(path_type=pathlib.Path), metavar="FILE",
              help="Also write the tables into FILE between its <!-- fmclf bench loss: summary|cases|speed --> "
                   "markers. Repeatable.")
@click.pass_context
@friendly
def loss(ctx: click.Context, names: tuple[str, ...], shape_args: tuple[str, ...], as_json: bool, device: str,
         threads: int | None, speed: bool, stability: bool, max_time: float, min_rounds: int,
         update_files: tuple[pathlib.Path, ...]) -> None:
    """Every named loss (default: every installed one) on the stress grid against a float64 reference, and its
    forward + backward speed by pytest-benchmark at 256x10, 4096x10, 4096x1000 (and --shapes), each beside
    torch's F.cross_entropy measured in the same run.

    \b
    fmclf bench loss                      every installed loss
    fmclf bench loss fused naive --json   two of them, for machines
    fmclf bench loss mine --no-speed      the stability table alone (no pytest needed)

    The reference is the loss's own `reference` attribute if it has one, cross-entropy's for a loss that
    computes cross-entropy, otherwise none (then only whether the loss and its gradient stay finite is
    measured, as the table says). Errors are in ulps.
    """
    from ..compare import bench as engine
    from ..run.devices import check_spec

    if not (speed or stability):
        raise UsageError("--no-speed and --no-stability leave nothing to measure; drop one of them.")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}.")
    if max_time <= 0 or min_rounds < 1:
        raise UsageError("--max-time must be above 0 and --min-rounds at least 1.")
    shapes = engine.parse_shapes(shape_args)
    for path in update_files:  # before minutes of work, not after
        if not path.is_file():
            raise UsageError(f"--update {str(path)!r}: no such file. Give a Markdown file that holds the table "
                             f"markers.")
        wanted = {"summary": stability, "cases": stability, "speed": speed}
        unmeasured = [b for b in engine.marked_blocks(path) if not wanted[b]]
        if unmeasured:
            raise UsageError(f"--update {str(path)!r} holds the {', '.join(unmeasured)} table(s), which this run "
                             f"does not measure; drop --no-speed or --no-stability.")
    check_spec(device)
    report = engine.run_bench(ctx.obj.host(), list(names), shapes=shapes, device=device, speed=speed, stable=stability,
                              max_time=max_time, min_rounds=min_rounds, threads=threads)
    click.echo(json.dumps(engine.to_json(report), indent=2) if as_json else engine.terminal(report))
    if update_files:
        filled = engine.blocks(report, command_line(ctx))
        for path in update_files:
            done = engine.update_file(path, filled)
            click.echo(f"updated {path}: {', '.join(done)}", err=as_json)
