"""``fmclf run``: train a classifier into a run folder, or resume one."""

from __future__ import annotations

import pathlib
from dataclasses import fields
from typing import Any, Callable

import click
from click.core import ParameterSource

from . import cli, friendly
from ._flags import DATA_ROOT, gather_options, require_data_root
from ..dist.launch import is_root_process
from ..errors import UsageError
from ..kinds import ROWS
from ..run.config import RunConfig, load_config, merge
from ..run.memory import describe as describe_memory

#: The settings a run takes from the command line: every RunConfig field but the options.
_RUN_KEYS = tuple(f.name for f in fields(RunConfig) if f.name != "options")
#: What --resume may change (the rest is fixed by the run's config.toml).
_RESUMABLE = {"epochs", "device", "cuda_graphs", "threads", *(k.setting for k in ROWS if k.many)}
_DEFAULTS = RunConfig()


def component_flags(command: Callable) -> Callable:
    """One flag per kind (``--model``, ``--visualizer`` ...), defaulted from :class:`RunConfig`;
    a kind a run has several of repeats its flag."""
    for row in reversed(ROWS):  # click lists options in the reverse order they are added
        default = getattr(_DEFAULTS, row.setting)
        listed = f"`fmclf plugins --kind {row.name}` lists them"
        if row.many:
            command = click.option(row.flag, row.setting, multiple=True, default=tuple(default), show_default=True,
                                   help=f"{row.name.capitalize()} component; repeat for several, 'none' for none "
                                        f"({listed}).")(command)
        else:
            command = click.option(row.flag, default=default, show_default=True,
                                   help=f"{row.name.capitalize()} component ({listed}).")(command)
    return command


@cli.command()
@component_flags
@click.option("--device", default=_DEFAULTS.device, show_default=True,
              help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=_DEFAULTS.cuda_graphs,
              help="CUDA: replay the training as CUDA graphs, a whole epoch at a time where the data set allows it "
                   "(same math, a fraction of the launch overhead; needs an updater that declares capturable = True). "
                   "[default: on for CUDA whenever the run's parts allow it, with a note when they do not]")
@click.option("--threads", type=int, default=_DEFAULTS.threads,
              help="CPU threads for torch's operations. [default: chosen from the model and the machine: 1 for a "
                   "small model, else one per CPU] The count used is recorded in config.toml.")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, show_default=True, help="Passes over the training set.")
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True,
              help="Examples per minibatch.")
@click.option("--lr", type=float, default=_DEFAULTS.lr, show_default=True, help="Learning rate.")
@click.option("--seed", type=int, default=_DEFAULTS.seed,
              help="Seed for initial weights and shuffling; a CPU run with the same seed repeats exactly. "
                   "[default: drawn and recorded]")
@click.option("--data-root", type=click.Path(path_type=pathlib.Path), default=None,
              help="Folder with the data set's files (the data set's data_root option).")
@click.option("-o", "--option", "option_args", multiple=True, metavar="KIND.OPTION=VALUE",
              help="Set a component option, e.g. -o model.hidden=128, or -o visualizer.NAME.OPTION=VALUE; "
                   "`fmclf plugins` lists every option. Repeatable.")
@click.option("--config", "config_path", type=click.Path(path_type=pathlib.Path), default=None,
              help="Read settings from a TOML file (a run folder's config.toml works); options given here win.")
@click.option("--out", type=click.Path(path_type=pathlib.Path), default=None,
              help="Run folder to create. [default: runs/DATE-TIME-MODEL-LOSS]")
@click.option("--resume", "resume_dir", type=click.Path(path_type=pathlib.Path), default=None,
              help="Continue the run in this folder from its last checkpoint (--epochs may extend it).")
@click.pass_context
@friendly
def run(ctx: click.Context, config_path, option_args, data_root, out, resume_dir, **given: Any) -> None:
    """Train a classifier and write a run folder (config, metrics, checkpoint, weights)."""
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    explicit = {k for k in given if ctx.get_parameter_source(k) in typed}
    given.update({k.setting: list(given[k.setting]) for k in ROWS if k.many})
    cli_options = gather_options(option_args)
    if data_root is not None:  # absolute, so the recorded config.toml works from any folder
        cli_options.setdefault("dataset", {})[DATA_ROOT] = str(data_root.expanduser().absolute())

    from ..run.runner import run_new, run_resume

    host = ctx.obj.host()
    if resume_dir is not None:
        fixed = explicit - _RESUMABLE
        if fixed or config_path or cli_options or out:
            named = sorted({f"--{k.replace('_', '-')}" for k in fixed}
                           | ({"--config"} if config_path else set())
                           | ({"-o/--data-root"} if cli_options else set())
                           | ({"--out"} if out else set()))
            raise UsageError(
                f"--resume continues a run with the settings it started with; {', '.join(named)} cannot change them. "
                f"Only --epochs (to train further), --device, --cuda-graphs, --threads and --visualizer "
                f"may be given with --resume."
            )
        result = run_resume(resume_dir, host, overrides={k: given[k] for k in explicit}, echo=click.echo)
    else:
        config = RunConfig(**{k: given[k] for k in _RUN_KEYS}, options=cli_options)
        if config_path is not None:
            config = merge(config, explicit, *load_config(config_path))
        if data_root is not None:
            require_data_root(host, config.dataset)
        result = run_new(config, host, out=out, echo=click.echo)
    if is_root_process():
        _print_summary(result)


def _print_summary(result) -> None:
    if not result.trained_epochs:
        return
    final = result.history[-1]
    per_epoch = result.seconds / result.trained_epochs
    click.echo(
        f"done: {result.trained_epochs} epoch(s) in {result.seconds:.2f} s ({per_epoch:.3f} s/epoch) "
        f"on {result.device}\n"
        f"final: train loss {final['train_loss']:.4f}  train acc {final['train_acc']:.4f}  "
        f"test acc {final['test_acc']:.4f}\n"
        "per-class test acc: " + "  ".join(f"{c} {a:.2f}" for c, a in final["per_class_test_acc"].items()) + "\n"
        + (f"peak memory: {describe_memory(result.memory, result.device)}\n" if result.memory else "")
        + f"run folder: {result.run_dir}"
    )
