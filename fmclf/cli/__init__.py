"""The ``fmclf`` command. Parses, delegates, prints; imports torch only when it trains."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
from typing import Any, Callable

import click
from click.core import ParameterSource

from .. import __version__
from ..run.config import RunConfig, load_config, merge
from ..dist.comm import is_root_process, process_label
from ..errors import FmclfError, Interrupted, UsageError
from ..run.memory import describe as describe_memory
from ..host.options import format_value, options_of, parse_assignment
from ..host.registry import KINDS

PLURALS = {"dataset": "datasets", "model": "models", "loss": "losses", "updater": "updaters", "visualizer": "visualizers"}


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


def friendly(fn: Callable) -> Callable:
    """Turn fmclf's errors into a message and an exit code instead of a traceback
    (set FMCLF_DEBUG=1 to see the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FmclfError as exc:
            if os.environ.get("FMCLF_DEBUG"):
                raise
            if not getattr(exc, "quiet", False):  # under torchrun, rank 0 reports what every process hit
                text = str(exc)
                _echo_err(f"{process_label()}{text[:1].upper() + text[1:]}" if isinstance(exc, Interrupted) else f"{process_label()}Error: {text}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # before training started (during it, the runner explains)
            if is_root_process():
                _echo_err("Interrupted.")
            sys.exit(130)

    return wrapper


class Settings:
    """Group-level flags, shared by the subcommands."""

    def __init__(self, plugin_flags: tuple[str, ...]) -> None:
        self.include = [f for f in plugin_flags if not f.startswith("no:")]
        self.block = [f[3:] for f in plugin_flags if f.startswith("no:")]
        self._host = None

    def host(self):
        """Load the plugins once, printing a warning for each one that failed."""
        if self._host is None:
            from ..host.loading import load_plugins, set_host

            self._host = load_plugins(include=self.include, block=self.block)
            set_host(self._host)
            for warning in self._host.warnings():
                _echo_err(f"Warning: {warning}")
        return self._host


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fmclf")
@click.option("-p", "--plugin", "plugin_flags", multiple=True, metavar="NAME|no:NAME",
              help="Load plugin NAME even when FMCLF_DISABLE_PLUGIN_AUTOLOAD=1, or block it with no:NAME. Repeatable.")
@click.pass_context
def cli(ctx: click.Context, plugin_flags: tuple[str, ...]) -> None:
    """Train and compare classifier components on Fashion-MNIST; every component is a plugin.

    \b
    fmclf run                          softmax regression, the textbook's settings
    fmclf run --loss naive --lr 0.5    watch the naive cross-entropy fail
    fmclf plugins                      what is installed, with every option
    """
    ctx.obj = Settings(plugin_flags)


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
    cli_options: dict[str, dict[str, Any]] = {}
    for text in option_args:
        target, key, value = parse_assignment(text)
        cli_options.setdefault(target, {})[key] = value
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


@cli.command()
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only components of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("filter", required=False)
@click.pass_context
@friendly
def plugins(ctx: click.Context, kind: str | None, as_json: bool, filter: str | None) -> None:
    """List plugins and their components with every option (does not import torch).

    FILTER keeps the components whose name, plugin or distribution contains it.
    """
    host = ctx.obj.host()
    text = (filter or "").lower()

    def matches(info) -> bool:
        return text in info.name.lower() or text in (info.dist or "").lower()

    records = [r for r in host.registry.list(kind) if text in r.name.lower() or matches(r.plugin)]
    owners = {r.plugin for r in records}
    shown = [p for p in host.plugins if not (filter or kind) or p.info in owners or (filter and matches(p.info))]
    if as_json:
        click.echo(json.dumps(_plugins_json(host, shown, records), indent=2))
        return
    click.echo("plugins:")
    for p in shown:
        tags = ["built-in"] if p.info.builtin else []
        if p.imported_torch:
            tags.append("imports torch at import time: slows every fmclf command")
        click.echo(f"  {p.info.name:<24} {p.info.describe():<20} {p.info.module}" + (f"  [{'; '.join(tags)}]" if tags else ""))
    for f in host.failures:
        click.echo(f"  {f.plugin.name:<24} {f.plugin.describe():<20} FAILED at {f.stage}: {f.error}")
    for k in KINDS if kind is None else (kind,):
        group = [r for r in records if r.kind == k]
        if not group:
            continue
        prefix = "visualizer.NAME" if k == "visualizer" else k
        click.echo(f"\n{PLURALS[k]}  (options: -o {prefix}.OPTION=VALUE)")
        for r in group:
            name = host.registry.name_to_type(r)
            click.echo(f"  {name:<16} {r.help}  [{r.plugin.describe()}]")
            for o in options_of(r):
                default = "required" if o.required else f"= {format_value(o.default)}"
                click.echo(f"      {o.name:<14} {str(o.type) + ' ' + default:<22} {o.help}".rstrip())
    if not records:
        what = f"{kind} " if kind else ""
        click.echo(f"\nno {what}component{f' matches {filter!r}' if filter else ' is registered'}.")


def _plugins_json(host, shown, records) -> dict[str, Any]:
    def info(i):
        return {"name": i.name, "dist": i.dist, "version": i.version, "module": i.module, "builtin": i.builtin}

    return {
        "plugins": [{**info(p.info), "load_seconds": round(p.seconds, 4), "imports_torch": p.imported_torch} for p in shown],
        "failures": [{**info(f.plugin), "stage": f.stage, "error": f.error} for f in host.failures],
        "components": [
            {
                "kind": r.kind, "name": r.name, "qualified_name": r.qualified_name, "select_as": host.registry.name_to_type(r), "help": r.help, "plugin": info(r.plugin),
                "options": [
                    {"name": o.name, "type": str(o.type), "default": None if o.required else _jsonable(o.default), "required": o.required, "help": o.help}
                    for o in options_of(r)
                ],
            }
            for r in records
        ],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return format_value(value)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=pathlib.Path))
@click.option("-n", "n", type=click.IntRange(1, 100), default=18, show_default=True, help="How many test images to predict and draw.")
@click.option("--out", type=click.Path(path_type=pathlib.Path), default=None, help="Picture to write (.png, .svg or .pdf). [default: RUN_DIR/predictions.png]")
@click.option("--device", default="cpu", show_default=True, help="Device to predict on: cpu (instant for a few images, whatever trained the run), cuda, cuda:N, mps or auto.")
@click.option("--data-root", type=click.Path(path_type=pathlib.Path), default=None, help="Folder with the data set's files, if not where the run found them.")
@click.pass_context
@friendly
def predict(ctx: click.Context, run_dir: pathlib.Path, n: int, out: pathlib.Path | None, device: str, data_root: pathlib.Path | None) -> None:
    """Draw a run's predictions: the first N test images titled true / predicted, wrong ones in red.

    Uses RUN_DIR/model.pt (or the last checkpoint of an unfinished run).
    """
    from ..draw.gallery import predict_run

    result = predict_run(run_dir, ctx.obj.host(), n=n, out=out, device=device, data_root=data_root)
    click.echo(f"{result.right} of {result.shown} right ({100 * result.right / result.shown:.1f}%), weights from {result.weights}")
    click.echo(f"wrote {result.path}")


@cli.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Data-set component whose inputs are images.")
@click.option("-n", "n", type=click.IntRange(1, 100), default=18, show_default=True, help="How many images.")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True, help="Training images (shuffled by --seed) or the first test images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffling seed for the training images.")
@click.option("--out", type=click.Path(path_type=pathlib.Path), default=None, help="Picture to write (.png, .svg or .pdf). [default: DATASET-SPLIT.png]")
@click.option("--data-root", type=click.Path(path_type=pathlib.Path), default=None, help="Folder with the data set's files (the dataset's data_root option).")
@click.option("-o", "--option", "option_args", multiple=True, metavar="dataset.OPTION=VALUE", help="Set a data-set option, e.g. -o dataset.resize=64. Repeatable.")
@click.pass_context
@friendly
def show(ctx: click.Context, dataset: str, n: int, split: str, seed: int, out: pathlib.Path | None, data_root: pathlib.Path | None, option_args: tuple[str, ...]) -> None:
    """Draw sample images of a data set with their text labels."""
    options: dict[str, Any] = {}
    for text in option_args:
        target, key, value = parse_assignment(text)
        if target != "dataset":
            raise UsageError(f"-o {text!r}: `fmclf show` builds only the data set, so only dataset.OPTION=VALUE options apply.")
        options[key] = value
    if data_root is not None:
        options["data_root"] = str(data_root)
    from ..draw.gallery import show_samples

    path, labels = show_samples(ctx.obj.host(), dataset, n=n, out=out or pathlib.Path(f"{dataset.replace(':', '_').replace('/', '_')}-{split}.png"),
                                split=split, seed=seed, options=options)
    click.echo(f"{len(labels)} {split} images: {', '.join(labels)}")
    click.echo(f"wrote {path}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fmclf")


from . import bench as _bench, compare as _compare  # noqa: E402, F401 - each registers its command on `cli`
