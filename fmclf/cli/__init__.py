"""The ``fmclf`` command: the group, its flags (:class:`Settings`) and the error handling every command shares
(:func:`friendly`). Each command is a public module of this package that adds itself to :data:`cli`; all are
imported below, so a new command is one new module. Imports torch only when it trains."""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable

import click

from .. import signals
from ..dist.launch import is_root_process, process_label
from ..errors import FmclfError, said, stopped
from ..run.threads import calm_openmp
from ..train.blame import torch_failed
from ._help import Group, epilog


def echo_err(text: str) -> None:
    """Print ``text`` to stderr."""
    click.echo(text, err=True)


def friendly(fn: Callable) -> Callable:
    """Turn fmclf's errors into a message and an exit code instead of a traceback
    (set FMCLF_DEBUG=1 to see the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FmclfError as exc:
            signals.ending()  # a signal now must not cut the message (or the exit) short
            if os.environ.get("FMCLF_DEBUG"):
                raise
            if not getattr(exc, "quiet", False):  # under torchrun, rank 0 reports what every process hit
                echo_err(f"{process_label()}{said(exc)}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # a signal outside a run (a run's own stops say what they kept)
            signals.ending()
            if is_root_process():
                echo_err(stopped(exc))
            sys.exit(130)
        except (ImportError, OSError) as exc:
            text = torch_failed(exc)
            if text is None or os.environ.get("FMCLF_DEBUG"):
                raise
            echo_err(f"{process_label()}Error: {text}")
            sys.exit(1)

    return wrapper


class Settings:
    """Group-level flags, shared by the subcommands."""

    def __init__(self, plugin_flags: tuple[str, ...]) -> None:
        self.plugins = plugin_flags  #: as given: NAME to load, no:NAME to block (a comparison's jobs get them too)
        self._host = None

    def host(self):
        """Load the plugins once, printing a warning for each one that failed."""
        if self._host is None:
            from ..host.loading import load_plugins, set_host, split_specs

            include, block = split_specs(self.plugins)
            self._host = load_plugins(include=include, block=block)
            set_host(self._host)
            for warning in self._host.warnings():
                echo_err(f"Warning: {warning}")
        return self._host


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from ._version import report

    click.echo(report())
    ctx.exit()


@click.group(cls=Group, epilog=epilog(),
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show fmclf's version, torch's, whether CUDA is available and the plugins loaded, then exit.")
@click.option("-p", "--plugin", "plugin_flags", multiple=True, metavar="NAME|no:NAME",
              help="Load plugin NAME even when FMCLF_DISABLE_PLUGIN_AUTOLOAD=1, or block it with no:NAME. Repeatable; "
                   "goes before the subcommand.")
@click.pass_context
def cli(ctx: click.Context, plugin_flags: tuple[str, ...]) -> None:
    """Train and compare classifier components on Fashion-MNIST; every component is a plugin.

    \b
    fmclf run                       softmax regression, the textbook's settings
    fmclf run --loss naive --lr 2   watch the naive cross-entropy fail
    fmclf run --dry-run             the settings a run would use, and why
    fmclf runs                      the run folders under runs/, newest first
    fmclf plugins                   what is installed, with every option

    `fmclf COMMAND --help` says more about each command.
    """
    ctx.obj = Settings(plugin_flags)


def main() -> None:
    """Console-script entry point: fmclf's signal handler first (see :mod:`fmclf.signals`), then
    standard output that cannot stop the work (see :mod:`fmclf.cli._streams`), then the command."""
    calm_openmp()  # before anything imports torch: OpenMP reads it once, when it loads
    signals.install()
    from . import _streams

    streams = _streams.guard()
    try:
        cli(prog_name="fmclf")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt as exc:  # a signal while click parsed the command line
        signals.ending()
        echo_err(stopped(exc))
        code = 130
    except (ImportError, OSError) as exc:  # outside a command (--version): torch failing to load
        text = torch_failed(exc)
        if text is None or os.environ.get("FMCLF_DEBUG"):
            raise
        echo_err(f"Error: {text}")
        code = 1
    signals.ignore_from_now_on()  # exiting: nothing may turn the exit code into a death by signal now
    sys.exit(streams.finish(code))


# The commands: every public module of this package (click lists them sorted by name).
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
