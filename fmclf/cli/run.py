"""``fmclf run``: train a classifier into a run folder, or resume one."""

from __future__ import annotations

import pathlib
from typing import Any

import click
from click.core import ParameterSource

from . import cli, friendly
from ._flags import gather_options
from ..dist.comm import is_root_process
from ..errors import UsageError
from ..run.config import RunConfig, load_config, merge
from ..run.memory import describe as describe_memory

_RUN_KEYS = ("dataset", "model", "loss", "updater", "visualizers", "device", "epochs", "batch_size", "lr", "seed", "cuda_graphs", "threads")


@cli.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Data-set component.")
@click.option("--model", default="scratch", show_default=True, help="Model component (scratch, nn, ...).")
@click.option("--loss", default="fused", show_default=True, help="Loss component (fused, naive, ...).")
@click.option("--updater", default="sgd", show_default=True, help="Updater component (sgd, torch-sgd, ...).")
@click.option("--visualizer", "visualizers", multiple=True, default=("tqdm",), show_default=True, help="Visualizer component; repeat for several, 'none' for none.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=False,
              help="CUDA only: replay each training step as one CUDA graph (same math, a fraction of the launch overhead; needs --updater sgd).")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch's operations. [default: one per core] On a machine busy with other work, 1 is often several times faster.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the training set.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Examples per minibatch.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Learning rate.")
@click.option("--seed", type=int, default=None, help="Seed for initial weights and shuffling; a CPU run with the same seed repeats exactly. [default: drawn and recorded]")
@click.option("--data-root", type=click.Path(path_type=pathlib.Path), default=None, help="Folder with the data set's files (the dataset's data_root option).")
@click.option("-o", "--option", "option_args", multiple=True, metavar="KIND.OPTION=VALUE",
              help="Set a component option, e.g. -o model.hidden=128, -o updater.momentum=0.9, -o visualizer.animator.svg=false. Repeatable.")
@click.option("--config", "config_path", type=click.Path(path_type=pathlib.Path), default=None,
              help="Read settings from a TOML file (a run folder's config.toml works); options given here win.")
@click.option("--out", type=click.Path(path_type=pathlib.Path), default=None, help="Run folder to create. [default: runs/DATE-TIME-MODEL-LOSS]")
@click.option("--resume", "resume_dir", type=click.Path(path_type=pathlib.Path), default=None,
              help="Continue the run in this folder from its last checkpoint (--epochs may extend it).")
@click.pass_context
@friendly
def run(ctx: click.Context, config_path, option_args, data_root, out, resume_dir, **given: Any) -> None:
    """Train a classifier and write a run folder (config, metrics, checkpoint, weights)."""
    explicit = {k for k in given if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    given["visualizers"] = list(given["visualizers"])
    cli_options = gather_options(option_args)
    if data_root is not None:  # absolute, so the recorded config.toml works from any folder
        cli_options.setdefault("dataset", {})["data_root"] = str(data_root.expanduser().absolute())

    from ..run.runner import run_new, run_resume

    host = ctx.obj.host()
    if resume_dir is not None:
        fixed = explicit - {"epochs", "device", "visualizers", "cuda_graphs", "threads"}
        if fixed or config_path or cli_options or out:
            named = sorted({f"--{k.replace('_', '-')}" for k in fixed} | ({"--config"} if config_path else set()) | ({"-o/--data-root"} if cli_options else set()) | ({"--out"} if out else set()))
            raise UsageError(
                f"--resume continues a run with the settings it started with; {', '.join(named)} cannot change them. "
                f"Only --epochs (to train further), --device, --cuda-graphs, --threads and --visualizer may be given with --resume."
            )
        result = run_resume(resume_dir, host, overrides={k: given[k] for k in explicit}, echo=click.echo)
    else:
        config = RunConfig(**{k: given[k] for k in _RUN_KEYS}, options=cli_options)
        if config_path is not None:
            config = merge(config, explicit, *load_config(config_path))
        result = run_new(config, host, out=out, echo=click.echo)
    if is_root_process():
        _print_summary(result)


def _print_summary(result) -> None:
    if not result.trained_epochs:
        return
    final = result.history[-1]
    per_epoch = result.seconds / result.trained_epochs
    click.echo(
        f"done: {result.trained_epochs} epoch(s) in {result.seconds:.2f} s ({per_epoch:.3f} s/epoch) on {result.device}\n"
        f"final: train loss {final['train_loss']:.4f}  train acc {final['train_acc']:.4f}  test acc {final['test_acc']:.4f}\n"
        "per-class test acc: " + "  ".join(f"{c} {a:.2f}" for c, a in final["per_class_test_acc"].items()) + "\n"
        + (f"peak memory: {describe_memory(result.memory, result.device)}\n" if result.memory else "")
        + f"run folder: {result.run_dir}"
    )
