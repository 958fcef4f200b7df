"""``fmclf compare``: a grid of runs over components, options and seeds, with statistics.

It takes ``fmclf run``'s own options, taken from the ``run`` command itself
rather than written out again, so an option ``run`` gains is an option of
``compare`` too. A run option that takes one value (``--model``, ``--loss``
...) may repeat here: each value is one more point on that axis. One that
already repeats in ``run`` (``--visualizer``) goes to every run as given.
Imports torch only in the runs.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pathlib
from typing import Any

import click
from click.core import ParameterSource

from ..compare.batching import DEFAULT_MAX_MODELS
from ..errors import UsageError
from ..host.options import parse_assignment
from ..kinds import BY_NAME
from ..run.config import RunConfig, load_config, merge
from . import cli, friendly
from ._commandline import command_line
from ._flags import DATA_ROOT, require_data_root
from .run import run as run_command  # whose options this command takes

#: Run options that have no meaning for a comparison: it names its runs' folders and continues them itself.
_NOT_HERE = {"out", "resume_dir"}
_RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)} - {"options"}


def _axes_of(run: click.Command) -> list[str]:
    """The run options that name one component: each may repeat in a comparison."""
    return [p.name for p in run.params if p.name in BY_NAME and not BY_NAME[p.name].many and not p.multiple]


def _from_run(param: click.Parameter, axes: list[str]) -> click.Parameter:
    """``run``'s option, adapted: an axis repeats; the seed is the first of the paired seeds;
    runs show nothing by default (their output goes to a log)."""
    p = copy.copy(param)
    if p.name in axes:
        p.multiple, p.default, p.show_default = True, None, False
        default = getattr(RunConfig(), p.name, None)
        p.help = f"{(param.help or '').rstrip('.')}. Repeat for more values on this axis. [default: {default}]"
    elif p.name == "seed":
        p.default, p.show_default = 0, True
        p.help = "Seed of the first of the --seeds paired seeds: every cell runs with seeds SEED, SEED+1, ..."
    elif p.name == "visualizers":
        p.default = ("none",)
        p.help = "Visualizer of every run; repeat for several. Each run's output goes to DIR/jobs/NAME.log."
    elif p.name == "option_args":
        p.help = ("Set a component option: -o KIND.OPTION=VALUE. Repeat a key with another value for a grid over it "
                  "(-o loss.label_smoothing=0 -o loss.label_smoothing=0.1); a component without that option "
                  "runs once without it.")
    elif p.name == "threads":
        p.help = "CPU threads of each run. [default: this machine's cores divided by --jobs]"
    return p


def _config(ctx: click.Context, given: dict[str, Any], axes: list[str], option_args, data_root,
            config_path) -> tuple[RunConfig, dict[str, list[str]], dict[str, list[str]]]:
    """The base configuration, the setting axes and the option axes."""
    explicit = {k for k in given if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,
                                                                    ParameterSource.ENVIRONMENT)}
    settings = {k: v for k, v in given.items() if k in _RUN_FIELDS and k not in axes}
    settings["visualizers"] = list(settings.get("visualizers") or ["none"])
    setting_axes = {k: list(given[k]) for k in axes if given.get(k)}
    from ..compare.grid import option_axes

    fixed, grid_options = option_axes([parse_assignment(text) for text in option_args])
    if data_root is not None:  # absolute, so every run's recorded config.toml works from any folder
        fixed.setdefault("dataset", {})[DATA_ROOT] = str(data_root.expanduser().absolute())
    base = RunConfig(**settings, options=fixed)
    if config_path is not None:
        base = merge(base, explicit - set(axes), *load_config(config_path))
    return base, setting_axes, grid_options


def _compare(ctx: click.Context, out: pathlib.Path, seeds: int, jobs: int, retry_failed: bool, rank_by: str | None,
             option_args, data_root, config_path, batch: bool = True, batch_models: int | None = None,
             **given: Any) -> None:
    """Train every cell of the grid with the same SEEDS seeds into DIR/runs/, and write
    DIR/compare.json, DIR/compare.md (the cells ranked, each compared with the best
    over the shared seeds) and DIR/curves.png (mean curves with a band per cell).

    \b
    fmclf compare --model scratch --model nn --loss naive --loss fused --seeds 5 --jobs 2 --out cmp
    fmclf compare --loss fused -o loss.label_smoothing=0 -o loss.label_smoothing=0.1 --seeds 3 --out smooth

    The same command again continues: finished runs are kept, interrupted ones
    resume from their checkpoints, and only what is missing trains. A run that
    diverges or fails is recorded with its reason and not trained again
    (--retry-failed does). Ctrl-C stops every run with its checkpoint.
    """
    from ..compare.engine import run_comparison
    from ..compare.executor import InProcessExecutor, LocalExecutor
    from ..compare.grid import build_cells, seeds_from

    if batch_models is not None and batch_models < 2:
        raise UsageError(f"--batch-models must be at least 2, got {batch_models}. It caps how many runs train as one "
                         f"group; --no-batch trains every run alone.")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}. It is how many runs train side by side.")
    axes = _axes_of(run_command)
    threads = given.get("threads")
    base, setting_axes, grid_options = _config(ctx, given, axes, option_args, data_root, config_path)
    seed_list = seeds_from(base.seed if base.seed is not None else 0, seeds)
    host = ctx.obj.host()
    if data_root is not None and "dataset" not in setting_axes:  # on an axis, it goes to the data sets that take it
        require_data_root(host, base.dataset)
    cells = build_cells(base, setting_axes, grid_options, host)
    settings = ctx.obj
    plugin_args = ([a for f in settings.include for a in ("-p", f)]
                   + [a for f in settings.block for a in ("-p", f"no:{f}")])
    executor = InProcessExecutor() if jobs == 1 else LocalExecutor(workers=jobs)
    comparison = run_comparison(cells, seeds=seed_list, out=out, host=host, executor=executor, threads=threads,
                                plugin_args=plugin_args, retry_failed=retry_failed, rank_by=rank_by, echo=click.echo,
                                command=command_line(ctx), batch=batch, batch_models=batch_models)
    from ..compare.markdown import COMPARE_MD

    table = [line for line in (comparison.root / COMPARE_MD).read_text(encoding="utf-8").splitlines()
             if line.startswith("|")]
    click.echo("\n".join(["", *table]))


def _build() -> click.Command:
    axes = _axes_of(run_command)
    params = [_from_run(p, axes) for p in run_command.params if p.name not in _NOT_HERE]
    params += [
        click.Option(["--out"], type=click.Path(path_type=pathlib.Path), required=True, metavar="DIR",
                     help="The comparison's folder: runs/, jobs/, compare.json, compare.md, curves.png. Give the same "
                          "DIR to continue."),
        click.Option(["--seeds"], type=int, default=3, show_default=True,
                     help="Runs per cell, with the same seeds in every cell (paired)."),
        click.Option(["--jobs"], type=int, default=1, show_default=True,
                     help="Runs side by side, each in its own process (1: one after the other in this process)."),
        click.Option(["--retry-failed"], is_flag=True,
                     help="Train the runs that failed or diverged again (from their last checkpoint)."),
        click.Option(["--batch/--no-batch"], default=True, show_default=True,
                     help="Train the runs that differ only in seed, --lr and per-model options together, as one "
                          "computation in one process per group (each still leaves its own run folder)."),
        click.Option(["--batch-models"], type=int, default=None, metavar="N",
                     help=f"At most N runs in one batched group (larger groups are split). "
                          f"[default: {DEFAULT_MAX_MODELS}]"),
        click.Option(["--rank-by"], metavar="METRIC[:max|min]", default=None,
                     help="Metric that ranks the cells. "
                          "[default: test_acc; lower is better for names with loss, error or ece]"),
    ]
    callback = click.pass_context(friendly(_compare))
    return click.Command("compare", callback=callback, params=params, help=inspect.cleandoc(_compare.__doc__ or ""),
                         short_help="Train a grid of components x seeds and compare them with statistics.")


compare = _build()
cli.add_command(compare)
