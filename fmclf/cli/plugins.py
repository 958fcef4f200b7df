"""``fmclf plugins``: the installed plugins and their components, with every option (imports no torch)."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any

import click

from ..host.options import format_value, options_of
from ..kinds import BY_NAME, KINDS
from ..run.folder import as_plain
from . import cli, echo_err, friendly
from ._help import NBSP


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
    nothing = bool(filter) and not records and not shown
    if as_json:
        click.echo(json.dumps(_plugins_json(host, shown, records), indent=2))
        if nothing:
            ctx.exit(1)
        return
    if nothing:
        echo_err(f"nothing matches {filter!r}{f' among the {kind} components' if kind else ''}: no component, plugin "
                 f"or distribution name contains it. `fmclf plugins` lists everything installed.")
        ctx.exit(1)
    width = min(max(shutil.get_terminal_size((100, 24)).columns, 60), 160)  # 100 columns when not a terminal
    click.echo("plugins:")
    rows = []
    for p in shown:
        tags = ["built-in"] if p.info.builtin else []
        if p.imported_torch:
            tags.append("imports torch at import time: slows every fmclf command")
        tag = f"  [{'; '.join(tags)}]" if tags else ""
        rows.append([p.info.name, p.info.describe().replace(" ", NBSP), p.info.module + tag])
    rows += [[f.plugin.name, f.plugin.describe(), f"FAILED at {f.stage}: {f.error}"] for f in host.failures]
    _grid(rows, width, indent=2)
    for k in KINDS if kind is None else (kind,):
        group = [r for r in records if r.kind == k]
        if not group:
            continue
        row = BY_NAME[k]
        click.echo(f"\n{row.plural}  (options: -o {row.option_prefix}.OPTION=VALUE)")
        names = [host.registry.select_as(r) for r in group]
        options = {id(r): options_of(r) for r in group}
        name_width = max(16, *map(len, names))
        option_width = max([14, *(len(o.name) for r in group for o in options[id(r)])])
        type_width = min(28, max([22, *(len(_type_text(o)) for r in group for o in options[id(r)])]))
        for r, name in zip(group, names):
            owner = f"[{r.plugin.describe()}]".replace(" ", NBSP)  # kept on one line
            _grid([[name, f"{r.help}  {owner}"]], width, indent=2, widths=[name_width])
            _grid([[o.name, _type_text(o), o.help] for o in options[id(r)]], width, indent=6,
                  widths=[option_width, type_width])
    if not records and not filter:
        what = f"{kind} " if kind else ""
        click.echo(f"\nno {what}component is registered.")


def _type_text(option) -> str:
    return f"{option.type} {'required' if option.required else f'= {format_value(option.default)}'}"


def _grid(rows: list[list[str]], width: int, *, indent: int, widths: list[int] | None = None) -> None:
    """Print ``rows`` in columns within ``width``: each column as wide as its widest cell (or
    ``widths``), narrowed when the line is short, text wrapped between words inside its column, the
    last column in the room that is left. A word too long for its column (a long name) takes its own
    line, and the rest of the row starts below it, in its columns: nothing runs into the next column."""
    if not rows:
        return
    n = len(rows[0])
    fixed = list(widths or [max(len(r[i]) for r in rows) for i in range(n - 1)])
    room = width - indent - 2 * (n - 1)
    longest_word = max((len(w) for r in rows for w in r[-1].split()), default=0)
    need_last = max(24, min(longest_word, room // 2))
    while sum(fixed) + need_last > room and max(fixed) > 8:  # narrow the widest column first
        fixed[fixed.index(max(fixed))] -= 1
    last = max(room - sum(fixed), need_last)
    for row in rows:
        cells = [_wrap(text, w) for text, w in zip(row, [*fixed, last])]
        while (long := next((i for i in range(n - 1) if any(len(x) > fixed[i] for x in cells[i])), None)) is not None:
            # the cells before it keep their first line here; the long one is written whole
            head = "".join(f"{c[0]:<{w + 2}}" for c, w in zip(cells[:long], fixed)) + " ".join(cells[long])
            click.echo((" " * indent + head).rstrip().replace(NBSP, " "))
            cells = [c[1:] or [""] for c in cells[:long]] + [[""]] + cells[long + 1:]
        for i in range(max(map(len, cells))):
            parts = [(c[i] if i < len(c) else "") for c in cells]
            line = "  ".join(f"{p:<{w}}" for p, w in zip(parts[:-1], fixed)) + "  " + parts[-1]
            if line.strip():
                click.echo((" " * indent + line).rstrip().replace(NBSP, " "))


def _wrap(text: str, width: int) -> list[str]:
    # words joined by NBSP stay on one line, unless together they are too long for the column
    text = " ".join(w.replace(NBSP, " ") if len(w) > width else w for w in text.split(" "))
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def _plugins_json(host, shown, records) -> dict[str, Any]:
    def info(i):
        return {"name": i.name, "dist": i.dist, "version": i.version, "module": i.module, "builtin": i.builtin}

    return {
        "plugins": [
            {**info(p.info), "load_seconds": round(p.seconds, 4), "imports_torch": p.imported_torch} for p in shown
        ],
        "failures": [{**info(f.plugin), "stage": f.stage, "error": f.error} for f in host.failures],
        "notes": list(host.notes),
        "components": [
            {
                "kind": r.kind, "name": r.name, "qualified_name": r.qualified_name,
                "select_as": host.registry.select_as(r), "help": r.help, "plugin": info(r.plugin),
                "options": [
                    {"name": o.name, "type": str(o.type), "default": None if o.required else as_plain(o.default),
                     "required": o.required, "help": o.help, "bounds": _bounds(o)}
                    for o in options_of(r)
                ],
            }
            for r in records
        ],
    }


def _bounds(option: Any) -> dict[str, Any] | None:
    """A number option's bounds (``fmclf.Range``) for machines; None for other options."""
    spec = option.type
    if spec.base not in (int, float) or spec.choices:
        return None
    b = spec.bounds
    return {"min": b.min if b else None, "max": b.max if b else None, "min_open": bool(b and b.min_open),
            "max_open": bool(b and b.max_open),
            "inf": spec.base is float and (spec.allow_inf or bool(b and b.inf))}
