"""``fmclf run``: train a classifier into a run folder, or resume one."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click
from click.core import ParameterSource

from ..dist.launch import is_root_process
from ..errors import UsageError
from ..kinds import ROWS
from ..run.config import OWN_SETTINGS, RESUMABLE, RunConfig, load_config, merge
from ..wording import flag
from . import cli, friendly
from ._flags import DATA_ROOT, PathArg, complete_component, complete_option, gather_options, require_data_root
from ._help import epilog

#: The settings a run takes from the command line: every RunConfig field but the options (and from_python,
#: which only fmclf.fit sets).
RUN_KEYS = tuple(f.name for f in fields(RunConfig) if f.name not in ("options", "from_python"))
_DEFAULTS = RunConfig()


def component_flags(command: Callable) -> Callable:
    """One flag per kind (``--model``, ``--visualizer`` ...), defaulted from :class:`RunConfig`;
    a kind a run has several of repeats its flag."""
    for row in reversed(ROWS):  # click lists options in the reverse order they are added
        default = getattr(_DEFAULTS, row.setting)
        several = ("; repeat for several" + (", 'none' for none" if default else "")) if row.many else ""
        command = click.option(
            row.flag, row.setting, multiple=row.many, default=tuple(default) if row.many else default,
            show_default=not row.many or bool(default), shell_complete=complete_component(row.name),
            help=f"{row.name.capitalize()} component{several} (`fmclf plugins --kind {row.name}` lists them).",
        )(command)
    return command


def setting_flags(command: Callable) -> Callable:
    """One flag per setting of its own (:data:`~fmclf.run.config.OWN_SETTINGS`), made from its field of
    :class:`RunConfig`: ``--batch-size`` for ``batch_size`` (a bool: ``--NAME/--no-NAME``), its type, its
    default and its help."""
    for name, (held, help_) in reversed(OWN_SETTINGS.items()):  # click lists options in reverse order of adding
        flag = "--" + name.replace("_", "-")
        decl, typed = (f"{flag}/--no-{flag[2:]}", {}) if held is bool else (flag, {"type": held})
        command = click.option(decl, name, **typed, default=getattr(_DEFAULTS, name), show_default=True,
                               help=help_)(command)
    return command


@cli.command(epilog=epilog())
@component_flags
@setting_flags
@click.option("--data-root", type=PathArg(), default=None,
              help="Folder with the data set's files (the data set's data_root option).")
@click.option("-o", "--option", "option_args", multiple=True, metavar="KIND.OPTION=VALUE",
              shell_complete=complete_option,
              help="Set a component option, e.g. -o loss.label_smoothing=0.1, or -o visualizer.NAME.OPTION=VALUE; "
                   "`fmclf plugins` lists every option. Repeatable.")
@click.option("--config", "config_path", type=PathArg(recorded=False), default=None,
              help="Read settings from a TOML file (a run folder's config.toml works); options given here win.")
@click.option("--out", type=PathArg(), default=None,
              help="Run folder to create. [default: runs/DATE-TIME-MODEL-LOSS]")
@click.option("--resume", "resume_dir", type=PathArg(), default=None,
              help="Continue the run in this folder from its last checkpoint (--epochs may extend it).")
@click.option("--dry-run", is_flag=True,
              help="Print the settings and every component option the run would use, each with where it came "
                   "from (default, config file, command line), and exit: nothing is trained or written.")
@click.pass_context
@friendly
def run(ctx: click.Context, config_path, option_args, data_root, out, resume_dir, dry_run, **given: Any) -> None:
    """Train a classifier and write a run folder (config, metrics, checkpoint, weights).

    \b
    fmclf run --epochs 20 --lr 0.05             the textbook's model, longer
    fmclf run --updater torch-sgd -o updater.momentum=0.9
    fmclf run --dry-run --config runs/X/config.toml
    fmclf run --resume runs/X --epochs 20       train a run further
    """
    typed = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    explicit = {k for k in given if ctx.get_parameter_source(k) in typed}
    given.update({k.setting: list(given[k.setting]) for k in ROWS if k.many})
    cli_options = gather_options(option_args)
    if data_root is not None:  # absolute, so the recorded config.toml works from any folder
        cli_options.setdefault("dataset", {})[DATA_ROOT] = str(data_root.expanduser().absolute())

    host = ctx.obj.host()
    if resume_dir is not None:
        fixed = explicit - set(RESUMABLE)
        if fixed or config_path or cli_options or out:
            named = sorted({flag(k) for k in fixed} | {name for name, value in (
                ("--config", config_path), ("-o/--data-root", cli_options), ("--out", out)) if value})
            may = [flag(k) + (" (to train further)" if k == "epochs" else "") for k in RESUMABLE]
            raise UsageError(
                f"--resume continues a run with the settings it started with; {', '.join(named)} cannot change them "
                f"(metrics and callbacks decide what the run records and when it stops). Only {', '.join(may[:-1])} "
                f"and {may[-1]} may be given with --resume."
            )
        overrides = {k: given[k] for k in explicit}
        if dry_run:
            click.echo(_dry_resume(resume_dir, host, overrides))
            return
    else:
        config = RunConfig(**{k: given[k] for k in RUN_KEYS}, options=cli_options)
        file_settings: dict[str, Any] = {}
        if config_path is not None:
            file_settings, file_options = load_config(config_path)
            config = merge(config, explicit, file_settings, file_options)
        if data_root is not None:
            require_data_root(host, config.dataset)
        if dry_run:
            click.echo(_dry_new(config, host, explicit, file_settings, config_path, cli_options, out))
            return
    from ..draw.report import RunReport
    from ..run import runner

    result = (runner.run_resume(resume_dir, host, overrides=overrides, echo=click.echo, report=RunReport)
              if resume_dir is not None else runner.run_new(config, host, out=out, echo=click.echo, report=RunReport))
    if is_root_process() and result.trained_epochs:
        click.echo(result.describe())


def _given(options: dict[str, dict[str, Any]], target: str, name: str) -> bool:
    return name in {k.replace("-", "_") for k in options.get(target, {})}


def _dry_new(config: RunConfig, host, explicit: set[str], file_settings: dict[str, Any],
             config_path: pathlib.Path | None, cli_options: dict[str, dict[str, Any]],
             out: pathlib.Path | None) -> str:
    """``--dry-run`` of a new run: sources are the command line, the --config file, the defaults."""
    from ..run import folder
    from ..run.explain import COMMAND_LINE, DEFAULT, explain

    from_file = f"config file {config_path}"

    def source(key: str) -> str:
        return COMMAND_LINE if key in explicit else from_file if key in file_settings else DEFAULT

    def option_source(target: str, name: str) -> str:
        if _given(cli_options, target, name):
            return COMMAND_LINE + (" (--data-root)" if target == "dataset" and name == DATA_ROOT else "")
        return from_file if _given(config.options, target, name) else DEFAULT

    if out is not None:
        folder.check_new(out)
    where = str(out) if out is not None else str(folder.default_run_dir(config.model, config.loss))
    return explain(config, host, source=source, option_source=option_source,
                   run_dir=where if out is not None else f"{where} (the default; --out chooses)")


def _dry_resume(run_dir: pathlib.Path, host, overrides: dict[str, Any]) -> str:
    """``--dry-run`` with ``--resume``: the run folder's settings, with what the command line changes."""
    from ..run import folder
    from ..run.explain import COMMAND_LINE, explain

    folder.check_resumable(run_dir)
    settings, options = folder.read_config(run_dir)
    config = RunConfig(**settings, options=options).resumed_with(overrides)
    recorded = f"run folder ({run_dir / folder.CONFIG})"

    def option_source(target: str, name: str) -> str:
        return recorded if _given(config.options, target, name) else "default"

    return explain(config, host, source=lambda k: COMMAND_LINE if k in overrides else recorded,
                   option_source=option_source, run_dir=f"{run_dir} (resumed)",
                   heading="the settings the resumed run would use")
