"""``fmclf compare``: a grid of runs over components, options and seeds, with statistics.

Its options are taken from the ``run`` command itself, so an option ``run`` gains is one of ``compare`` too. A
component option (``--model``, ``--loss`` ...) may repeat here: each value is one more point on that axis; one
that already repeats in ``run`` (``--visualizer``) goes to every run as given. Imports torch only in the runs.
"""

from __future__ import annotations

import copy
import inspect
import pathlib
from typing import Any

import click
from click.core import ParameterSource

from ..compare import autoseeds, executors, grid
from ..compare.autoseeds import DEFAULT_CAP as AUTO_CAP
from ..compare.autoseeds import START as AUTO_START
from ..compare.batching import DEFAULT_MAX_MODELS
from ..compare.grid import MAX_JOBS, MAX_SEEDS, MAX_TRIALS, SCALAR_AXES
from ..compare.results import LOWER_IS_BETTER
from ..errors import UsageError
from ..host.options import parse_assignment
from ..kinds import BY_NAME
from ..run.config import RunConfig, load_config, merge
from . import cli, friendly
from ._commandline import command_line
from ._flags import DATA_ROOT, require_data_root
from .run import RUN_KEYS
from .run import run as run_command  # whose options this command takes

#: Run options that have no meaning for a comparison: it names its runs' folders and continues them itself.
_NOT_HERE = {"out", "resume_dir"}


def _axes_of(run: click.Command) -> list[str]:
    """The run options that name one component: each may repeat in a comparison."""
    return [p.name for p in run.params if p.name in BY_NAME and not BY_NAME[p.name].many and not p.multiple]


def _from_run(param: click.Parameter, axes: list[str]) -> click.Parameter:
    """``run``'s option, adapted: an axis repeats; the seed is the first of the paired seeds;
    runs show nothing by default (their output goes to a log); ``--dry-run`` prints the grid."""
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
    elif p.name == "dry_run":
        p.help = ("Print the grid (cells, seeds, trials and the command of every run) and exit: nothing is trained "
                  "or written.")
    elif p.name in SCALAR_AXES:
        p.help = f"{(param.help or '').rstrip('.')}; repeat for more values on this axis."
    return _once_or_axis(p)


def _once_or_axis(p: click.Parameter) -> click.Parameter:
    """A single-valued option collects every time it is given, so that a repetition is an axis
    (:data:`~fmclf.compare.grid.SCALAR_AXES`) or an error, never "the last one wins"."""
    if isinstance(p, click.Option) and not p.multiple and not p.is_flag:
        unset = p.default is None or p.default is getattr(click.core, "UNSET", None)  # click >= 8.2: no default
        # the flag is what a message calls it: --executor, not its parameter's name
        _SINGLE[p.name] = (None if unset else p.default, max(p.opts, key=len))
        p.multiple = True
        p.default = None if unset else (p.default,)
    return p


#: The single-valued options collected as lists (see :func:`_once_or_axis`): their defaults and flags.
_SINGLE: dict[str, tuple[Any, str]] = {}


def _single_values(given: dict[str, Any]) -> dict[str, list[str]]:
    """Collapse each collected option to its one value in ``given``; return the scalar axes
    (a setting of :data:`SCALAR_AXES` given more than once). Any other option given twice is an error."""
    axes: dict[str, list[str]] = {}
    for name, (default, flag) in _SINGLE.items():
        if name not in given:
            continue
        values = list(given[name] or ())
        if len(values) > 1 and name in SCALAR_AXES:
            axes[name] = [str(v) for v in values]
            given[name] = values[0]
        elif len(values) > 1:
            raise UsageError(
                f"{flag} is given {len(values)} times ({', '.join(str(v) for v in values)}); it takes one value. "
                f"Only {', '.join('--' + s.replace('_', '-') for s in SCALAR_AXES)} and the components "
                f"(--model, --loss ...) repeat to make an axis; give {flag} once."
            )
        else:
            given[name] = values[0] if values else default
    return axes


def _config(ctx: click.Context, given: dict[str, Any], axes: list[str], option_args, data_root,
            config_path) -> tuple[RunConfig, dict[str, list[str]], dict[str, list[str]]]:
    """The base configuration, the setting axes and the option axes."""
    explicit = {k for k in given if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,
                                                                    ParameterSource.ENVIRONMENT)}
    settings = {k: v for k, v in given.items() if k in RUN_KEYS and k not in axes}
    settings["visualizers"] = list(settings.get("visualizers") or ["none"])
    setting_axes = {k: list(given[k]) for k in axes if given.get(k)}
    fixed, grid_options = grid.option_axes([parse_assignment(text) for text in option_args])
    if data_root is not None:  # absolute, so every run's recorded config.toml works from any folder
        fixed.setdefault("dataset", {})[DATA_ROOT] = str(data_root.expanduser().absolute())
    base = RunConfig(**settings, options=fixed)
    if config_path is not None:
        base = merge(base, explicit - set(axes), *load_config(config_path))
    return base, setting_axes, grid_options


def _compare(ctx: click.Context, **given: Any) -> None:
    """Train every cell of the grid with the same SEEDS seeds into DIR/runs/, and write DIR/compare.json,
    DIR/compare.md (the cells ranked, each compared with the best over the shared seeds) and DIR/curves.png
    (mean curves with a band per cell).

    \b
    fmclf compare --model scratch --model nn --loss naive --loss fused --seeds 5 --jobs 2 --out cmp
    fmclf compare --loss fused -o loss.label_smoothing=0 -o loss.label_smoothing=0.1 --seeds 3 --out smooth
    fmclf compare --updater sgd --updater torch-sgd --tune lr=log:0.01..1 --trials 8 --seeds 5 --out tuned

    A setting given twice (--lr 0.1 --lr 0.01) is one more axis, as a component is; one that cannot be an axis
    (--epochs, --device ...) is given once.

    With --tune, every cell gets the same --trials T trials on a validation split (-o dataset.valid, 0.1 unless
    given), drawn by a deterministic sampler, then its best configuration on validation trains on the --seeds
    seeds (never a trial's) and is reported on test. With a validation split, the cells are ranked on the
    validation metric; test is shown beside it, never used to choose. --prune halving stops the worse half of
    the trials at each rung (they train a few epochs; the better half resumes from its checkpoint). --seeds auto
    adds seeds to each cell until its difference from the best is resolved.

    The same command again continues: finished runs are kept, interrupted ones resume from their checkpoints,
    and only what is missing trains. A run that diverges or fails is recorded with its reason and not trained
    again (--retry-failed does); the exit code is then 1. Ctrl-C stops every run with its checkpoint (exit code
    130). One comparison writes to DIR at a time.

    \b
    On a Ray cluster or as a SLURM job array (DIR shared by the nodes):
    fmclf compare --model scratch --model nn --threads 2 --executor ray --ray-address auto --out cmp
    fmclf compare --model nn --threads 2 --executor slurm --slurm-partition gpu --detach --out cmp
    """
    from ..compare.comparison import run_comparison

    scalar_axes = _single_values(given)
    out, seeds, jobs = given.pop("out"), given.pop("seeds"), given.pop("jobs")
    retry_failed, rank_by, dry_run = given.pop("retry_failed"), given.pop("rank_by"), given.pop("dry_run")
    tune, trials, sampler, prune = given.pop("tune"), given.pop("trials"), given.pop("sampler"), given.pop("prune")
    option_args, data_root, config_path = given.pop("option_args"), given.pop("data_root"), given.pop("config_path")
    executor_args = {name: given.pop(name) for name in (
        "executor_name", "detach", "ray_address", "slurm_partition", "slurm_time", "slurm_cpus", "slurm_gpus",
        "slurm_array_parallelism", "slurm_options")}
    batch, batch_models = given.pop("batch"), given.pop("batch_models")
    if batch_models is not None and batch_models < 2:
        raise UsageError(f"--batch-models must be at least 2, got {batch_models}. It caps how many runs train as one "
                         f"group; --no-batch trains every run alone.")
    if jobs is not None:
        grid.check_jobs(jobs)
    executor = _executor(jobs=jobs, threads=given.get("threads"), device=given.get("device") or "auto", **executor_args)
    threads = given.get("threads")
    base, setting_axes, grid_options = _config(ctx, given, _axes_of(run_command), option_args, data_root, config_path)
    setting_axes.update(scalar_axes)
    seed_list, auto = _seeds(seeds, base.seed)
    host = ctx.obj.host()
    if data_root is not None and "dataset" not in setting_axes:  # on an axis, it goes to the data sets that take it
        require_data_root(host, base.dataset)
    protocol = None
    if tune or trials is not None or sampler is not None or prune is not None:
        from ..compare.tuning import protocol_of

        protocol = protocol_of(tune, trials, sampler, base, grid_options, host, prune)
        base = protocol.with_split(base)
    cells = grid.build_cells(base, setting_axes, grid_options, host)
    comparison = run_comparison(cells, seeds=seed_list, out=out, host=host, executor=executor, threads=threads,
                                plugins=ctx.obj.plugins, retry_failed=retry_failed, rank_by=rank_by, echo=click.echo,
                                command=command_line(ctx), protocol=protocol, dry_run=dry_run,
                                batch=batch, batch_models=batch_models, auto=auto)
    if comparison is None:  # a dry run: the grid was printed
        return
    from ..compare.markdown import COMPARE_MD

    table = [line for line in (comparison.root / COMPARE_MD).read_text(encoding="utf-8").splitlines()
             if line.startswith("|")]
    click.echo("\n".join(["", *table]))
    if comparison.failed:
        _failed(comparison.failed, out, command_line(ctx))


def _seeds(seeds: str, seed: int | None) -> tuple[list[int], Any]:
    """``--seeds N`` or ``auto[:CAP]``: the first round's seeds, from ``--seed`` (0 unless given), and auto's
    rounds (None for N). Every seed auto may add is checked now, before any work."""
    count, auto = autoseeds.parse(seeds)
    first = seed if seed is not None else 0
    if auto is not None:
        grid.seeds_from(first, auto.cap)
    return grid.seeds_from(first, count), auto


def _failed(failed: list[str], out: pathlib.Path, command: str) -> None:
    """Exit 1 naming the failed runs: a script must not take a comparison with holes for a whole one."""
    from ..compare.comparison import RunsFailed

    shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
    if "--retry-failed" not in command.split():
        command += " --retry-failed"
    raise RunsFailed(
        f"{len(failed)} run(s) of this comparison failed: {shown}. compare.json and compare.md in {out} hold the "
        f"runs that finished, each failure with its reason (the whole output is in {out / 'jobs'}/NAME.log). Once "
        f"the cause is fixed, `{command}` trains the failed runs again from their last checkpoints."
    )


def _executor(executor_name: str, *, jobs: int | None, threads: int | None, device: str, detach: bool,
              ray_address: str | None, slurm_options: tuple[str, ...], **slurm: Any):
    """The executor --executor names, set up from the command line (its checks come first)."""
    options = {}
    for text in slurm_options:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-option {text!r} is not KEY=VALUE. Give an sbatch option without its dashes, "
                             f"e.g. --slurm-option mem=8G or --slurm-option account=mylab.")
        options[key.strip().lstrip("-")] = value
    slurm_settings = executors.SlurmSettings(**{k.removeprefix("slurm_"): v for k, v in slurm.items()}, options=options)
    return executors.make(executor_name, executors.ExecutorSettings(jobs=jobs, threads=threads, device=device,
                                                                    detach=detach, ray_address=ray_address,
                                                                    slurm=slurm_settings))


def _build() -> click.Command:
    axes = _axes_of(run_command)
    params = [_from_run(p, axes) for p in run_command.params if p.name not in _NOT_HERE]
    own = [
        click.Option(["--out"], type=click.Path(path_type=pathlib.Path), required=True, metavar="DIR",
                     help="The comparison's folder: runs/, jobs/, compare.json, compare.md, curves.png. Give the same "
                          "DIR to continue."),
        click.Option(["--seeds"], metavar="N|auto[:CAP]", default="3", show_default=True,
                     help=f"Runs per cell, with the same seeds in every cell (paired); at most {MAX_SEEDS}. auto: "
                          f"{AUTO_START} seeds, then more for each cell whose difference from the best is not resolved "
                          f"(its bootstrap 95% interval includes 0), up to CAP [default CAP: {AUTO_CAP}]."),
        click.Option(["--jobs"], type=int, default=None,
                     help=f"Runs side by side, each in its own process (1, the default: one after the other in this "
                          f"process); with ray or slurm, the most at once (default: no limit). At most {MAX_JOBS}."),
        click.Option(["--retry-failed"], is_flag=True,
                     help="Train the runs that failed or diverged again (from their last checkpoint)."),
        click.Option(["--batch/--no-batch"], default=True, show_default=True,
                     help="Train the runs that differ only in seed, --lr and per-model options together, as one "
                          "computation in one process per group (each still leaves its own run folder)."),
        click.Option(["--batch-models"], type=int, default=None, metavar="N",
                     help=f"At most N runs in one batched group (larger groups are split). "
                          f"[default: {DEFAULT_MAX_MODELS}]"),
        click.Option(["--rank-by"], metavar="METRIC[:max|min]", default=None,
                     help="Metric that ranks the cells (with a validation split, its valid_ twin ranks and the test "
                          "one is shown beside it). [default: valid_acc where the runs have a validation split, "
                          f"else test_acc; lower is better for names containing {', '.join(LOWER_IS_BETTER)}]"),
        click.Option(["--tune"], multiple=True, metavar="SETTING=log:A..B|lin:A..B|V1,V2,...",
                     help="Tune a numeric setting (lr, batch_size) or component option (updater.momentum, "
                          "updater.torch-sgd.momentum) per cell over this range or list; repeat for several."),
        click.Option(["--trials"], type=int, default=None,
                     help=f"Tuning trials per cell, the same for every cell (at most {MAX_TRIALS}). [default: 8 "
                          f"with --tune]"),
        click.Option(["--prune"], type=click.Choice(["none", "halving"]), default=None,
                     help="halving: successive halving of each cell's trials (they train a few epochs; the better "
                          "half on validation resumes from its checkpoint to twice as many, the rest stop there; "
                          "the same rungs for every cell). [default: none]"),
        click.Option(["--sampler"], type=click.Choice(["qmc", "tpe"]), default=None,
                     help="How trials are drawn: qmc (a seeded Sobol sequence: every cell gets the same points) or "
                          "tpe (Optuna's seeded TPE). [default: qmc]"),
        # --executor and what the cluster executors take
        click.Option(["--executor", "executor_name"], metavar="NAME", default=executors.DEFAULT, show_default=True,
                     help=f"Where the runs train: {', '.join(executors.names())} (a package may add more). "
                          f"ray and slurm need --threads and DIR on a file system the nodes share."),
        click.Option(["--detach"], is_flag=True,
                     help="slurm: return once the array is submitted; the same command again collects."),
        click.Option(["--ray-address"], metavar="ADDRESS", envvar="RAY_ADDRESS", show_envvar=True,
                     help="ray: the cluster to join (auto: the one running on this machine). "
                          "[default: start one here]"),
        click.Option(["--slurm-partition"], metavar="NAME", help="slurm: the partition of the array's tasks."),
        click.Option(["--slurm-time"], metavar="TIME", help="slurm: each task's time limit, as sbatch --time "
                     "takes it; a task requeues itself (with its checkpoint) before it. [default: 24:00:00]"),
        click.Option(["--slurm-cpus"], type=int, metavar="N", help="slurm: CPUs per task. [default: --threads]"),
        click.Option(["--slurm-gpus"], type=int, metavar="N",
                     help="slurm: GPUs per task. [default: 1 with --device cuda, else 0]"),
        click.Option(["--slurm-array-parallelism"], type=int, metavar="N",
                     help="slurm: tasks of the array running at once. [default: --jobs, else no limit]"),
        click.Option(["--slurm-option", "slurm_options"], multiple=True, metavar="KEY=VALUE",
                     help="slurm: any other sbatch option (mem=8G, account=lab, qos=high); repeat for several."),
    ]
    params += [_once_or_axis(p) for p in own]
    callback = click.pass_context(friendly(_compare))
    return click.Command("compare", callback=callback, params=params, help=inspect.cleandoc(_compare.__doc__ or ""),
                         short_help="Train a grid of components x seeds and compare them with statistics.")


compare = _build()
cli.add_command(compare)
