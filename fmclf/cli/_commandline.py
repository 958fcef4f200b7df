"""The command line that repeats a command, rebuilt from what Click parsed: for
the tables and files a command writes, which say how to make them again."""

from __future__ import annotations

import shlex

import click
from click.core import ParameterSource


def command_line(ctx: click.Context) -> str:
    """``fmclf [-p X] SUB ... --option value ...``: every option and argument given on the
    command line (defaults left out), for ``ctx`` and the contexts above it."""
    chain = []
    while ctx is not None:
        chain.append(ctx)
        ctx = ctx.parent
    parts = ["fmclf"]
    for c in reversed(chain):
        if c.parent is not None:
            parts.append(c.info_name or c.command.name)
        for p in c.command.params:
            if c.get_parameter_source(p.name) != ParameterSource.COMMANDLINE:
                continue
            value = c.params.get(p.name)
            if isinstance(p, click.Argument):
                parts += [str(v) for v in (value if isinstance(value, (tuple, list)) else (value,))]
            elif p.is_flag and not p.multiple:
                parts += (p.opts if value else p.secondary_opts)[:1]
            else:
                flag = min(p.opts, key=len) if p.name == "plugin_flags" else max(p.opts, key=len)
                for v in value if p.multiple else (value,):
                    parts += [flag, str(v)]
    return shlex.join(parts)
