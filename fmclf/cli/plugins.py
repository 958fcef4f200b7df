"""``fmclf plugins``: the installed plugins and their components, with every option (imports no torch)."""

from __future__ import annotations

import json
from typing import Any

import click

from . import cli, friendly
from ..host.options import format_value, options_of
from ..kinds import BY_NAME, KINDS


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
        click.echo(f"  {p.info.name:<24} {p.info.describe():<20} {p.info.module}"
                   + (f"  [{'; '.join(tags)}]" if tags else ""))
    for f in host.failures:
        click.echo(f"  {f.plugin.name:<24} {f.plugin.describe():<20} FAILED at {f.stage}: {f.error}")
    for k in KINDS if kind is None else (kind,):
        group = [r for r in records if r.kind == k]
        if not group:
            continue
        row = BY_NAME[k]
        click.echo(f"\n{row.plural}  (options: -o {row.option_prefix}.OPTION=VALUE)")
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
        "plugins": [
            {**info(p.info), "load_seconds": round(p.seconds, 4), "imports_torch": p.imported_torch} for p in shown
        ],
        "failures": [{**info(f.plugin), "stage": f.stage, "error": f.error} for f in host.failures],
        "notes": list(host.notes),
        "components": [
            {
                "kind": r.kind, "name": r.name, "qualified_name": r.qualified_name,
                "select_as": host.registry.name_to_type(r), "help": r.help, "plugin": info(r.plugin),
                "options": [
                    {"name": o.name, "type": str(o.type), "default": None if o.required else _jsonable(o.default),
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return format_value(value)
