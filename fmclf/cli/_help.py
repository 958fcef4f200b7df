"""How the command line presents itself: help that wraps between words only, command
summaries in full, the environment variables, exit codes and docs every help names,
and a hint for a group flag given after the subcommand. Imports no torch."""

from __future__ import annotations

import pathlib
import re
import textwrap
from collections.abc import Sequence

import click

#: The environment variables fmclf reads, with what each does (``fmclf --help``, ``run --help``).
ENVIRONMENT = (
    ("FMCLF_DATA=DIR", "folder holding the Fashion-MNIST files (looked at after --data-root)"),
    ("FMCLF_DEBUG=1", "show the traceback behind an error message"),
    ("FMCLF_STRICT_PLUGINS=1", "a plugin that fails to load is an error, not a warning"),
    ("FMCLF_DISABLE_PLUGIN_AUTOLOAD=1", "load only the built-ins, and plugins named with -p"),
    ("FMCLF_DIST_TIMEOUT=SECONDS", "under torchrun, how long to wait for a silent process (600)"),
)

#: The exit codes every command uses.
EXIT_CODES = (
    ("0", "done"),
    ("1", "failed while working (data, a component, divergence, a checkpoint)"),
    ("2", "bad input, refused before any work"),
    ("130", "stopped by Ctrl-C or SIGTERM (a run writes a checkpoint first)"),
)

#: The group options a user may put after the subcommand by mistake.
GROUP_FLAGS = ("-p", "--plugin")


def columns(rows: Sequence[tuple[str, str]], width: int = 78, indent: int = 2) -> str:
    """Two columns, the second wrapped between words to fit ``width`` (help epilogs are not rewrapped)."""
    first = max(len(name) for name, _ in rows)
    room = max(width - indent - first - 2, 20)
    out = []
    for name, what in rows:
        lines = textwrap.wrap(what, room, break_on_hyphens=False) or [""]
        out.append(f"{'':{indent}}{name:<{first}}  {lines[0]}")
        out.extend(f"{'':{indent + first + 2}}{line}" for line in lines[1:])
    return "\n".join(out)


def epilog() -> str:
    """The environment variables, exit codes and docs, as a help epilog (``\\b`` keeps the columns). The docs
    are the source tree's README.md and docs/ when they are beside this installation (an editable install, a
    clone), else where to find them."""
    root = pathlib.Path(__file__).resolve().parents[2]
    docs = "README.md and docs/ in fmclf's source (`pip show -f fmclf` shows where it is installed)"
    if (root / "README.md").is_file() and (root / "docs").is_dir():
        docs = f"{root / 'README.md'} and {root / 'docs'}/"
    return (f"\b\nEnvironment:\n{columns(ENVIRONMENT)}\n\n\b\nExit codes:\n{columns(EXIT_CODES)}\n\n"
            f"Docs: {docs}.")


def wrap(text: str, width: int) -> list[str]:
    """Wrap ``text`` to ``width`` between words only (never inside ``fashion-mnist`` or a path),
    keeping paragraphs and Click's ``\\b`` blocks."""
    wrapper = textwrap.TextWrapper(width=max(width, 10), break_on_hyphens=False, break_long_words=False)
    # "[default: drawn and recorded]" stays on one line: textwrap splits at ASCII spaces only
    text = _DEFAULT.sub(lambda m: m.group(0).replace(" ", NBSP), text)
    lines: list[str] = []
    for n, paragraph in enumerate(text.split("\n\n")):
        if n:
            lines.append("")
        if paragraph.startswith("\b\n"):
            lines.extend(paragraph[2:].splitlines())
        else:
            lines.extend(wrapper.wrap(re.sub(r"[ \t\n]+", " ", paragraph).strip()) or [""])
    return [line.replace(NBSP, " ") for line in lines]


NBSP = "\u00a0"  #: textwrap breaks lines at ASCII spaces only
_DEFAULT = re.compile(r"\[default: [^\]]*\]")


class Formatter(click.HelpFormatter):
    """Click's formatter, wrapping definition lists between words only."""

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first_col = min(max((len(r[0]) for r in rows), default=0), col_max) + col_spacing
        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:
                self.write("\n" + " " * (first_col + self.current_indent))
            lines = wrap(second, self.width - first_col - self.current_indent - 2) or [""]
            self.write(lines[0] + "\n")
            for line in lines[1:]:
                self.write((f"{'':>{first_col + self.current_indent}}{line}" if line else "") + "\n")


class Context(click.Context):
    """Every fmclf context formats help with :class:`Formatter`."""

    formatter_class = Formatter


class Command(click.Command):
    """An fmclf subcommand: a group flag given after it gets a hint instead of "No such option"."""

    context_class = Context

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # the parser consumes args
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if exc.option_name in GROUP_FLAGS:
                value = _value_after(given, exc.option_name)
                raise click.UsageError(
                    f"{exc.option_name} is an option of fmclf itself, not of `{ctx.info_name}`, so it goes before "
                    f"the subcommand: `fmclf {exc.option_name} {value} {ctx.info_name} ...`.", ctx,
                ) from None
            raise


def _value_after(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag) and arg != flag:
            return arg[len(flag):].lstrip("=")
    return "NAME"


class Group(click.Group):
    """The ``fmclf`` group: subcommands are :class:`Command`; their summaries are shown whole, wrapped."""

    context_class = Context
    command_class = Command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = ((name, self.get_command(ctx, name)) for name in self.list_commands(ctx))
        # a summary is the short_help, or the help's first paragraph, whole
        rows = [(name, " ".join((c.short_help or (c.help or "").split("\n\n")[0]).split()))
                for name, c in commands if c is not None and not c.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
