"""What the flags several commands share turn into: ``-o KIND.OPTION=VALUE`` assignments gathered by option
target, ``--data-root`` checked against the data set it goes to, paths, and shell completion."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.shell_completion import CompletionItem

from ..errors import OptionError, UsageError
from ..host.options import options_of, parse_assignment

#: The data-set option that ``--data-root`` sets.
DATA_ROOT = "data_root"


def dataset_options(host: Any, dataset: str, texts: Iterable[str], data_root: pathlib.Path | None,
                    command: str) -> dict[str, Any]:
    """A command's ``-o dataset.OPTION=VALUE`` and ``--data-root`` for data set ``dataset``, which is all
    ``command`` builds (any other kind's option is refused, saying so)."""
    options: dict[str, Any] = {}
    for text in texts:
        target, key, value = parse_assignment(text)
        if target != "dataset":
            raise UsageError(f"-o {text!r}: `{command}` builds only the data set, so only dataset.OPTION=VALUE "
                             f"options apply.")
        options[key] = value
    if data_root is not None:
        require_data_root(host, dataset)
        options[DATA_ROOT] = str(data_root)
    return options


def gather_options(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``-o`` assignments as ``{target: {option: text}}``; a later one for the same option wins."""
    options: dict[str, dict[str, Any]] = {}
    for text in texts:
        target, key, value = parse_assignment(text)
        options.setdefault(target, {})[key] = value
    return options


def require_data_root(host: Any, dataset: str) -> None:
    """Refuse ``--data-root`` for a data set that takes no ``data_root`` option, saying what it takes instead."""
    record = host.registry.get("dataset", dataset)
    options = options_of(record)
    if any(o.name == DATA_ROOT for o in options):
        return
    listing = ("Its options: " + "; ".join(o.describe() for o in options)) if options else "It has no options"
    raise OptionError(
        f"data set {record.name!r} ({record.plugin.describe()}) takes no {DATA_ROOT} option, so --data-root "
        f"cannot apply; leave --data-root out (this data set finds its data itself, or through its own "
        f"options). {listing}."
    )


def require_run_data_root(host: Any, run_dir: pathlib.Path, data_root: pathlib.Path | None) -> None:
    """Refuse ``--data-root`` for a command that opens the run folder ``run_dir`` (``eval``, ``predict``,
    ``report``) when the data set the run trained on takes no ``data_root`` option; before any work."""
    if data_root is None:
        return
    from ..run.trained import load_run_config  # lazily: the run layer is not needed for --help

    require_data_root(host, load_run_config(run_dir).dataset)


class PathArg(click.ParamType):
    """A path flag: refuses the empty string (``pathlib.Path("")`` is the current folder, which
    ``--out ""`` would silently make the run folder) and, where fmclf records the path in its
    UTF-8 files (config.toml, report.md), one holding bytes that are not UTF-8."""

    name = "path"

    def __init__(self, *, recorded: bool = True) -> None:
        self.recorded = recorded

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> pathlib.Path:
        if isinstance(value, pathlib.Path):
            return value
        text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
        if not text.strip():
            self.fail("the path is empty. Give a file or folder name, or leave the option out.", param, ctx)
        if self.recorded:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                self.fail(f"{text!r} holds bytes that are not UTF-8 text. fmclf records paths in its UTF-8 "
                          f"files (config.toml, report.md), which cannot hold them: rename the file or "
                          f"folder, or use another one.", param, ctx)
        return pathlib.Path(text)


def _completion_host() -> Any:
    """The plugins, loaded quietly for shell completion (no torch, no warnings on the user's prompt)."""
    from ..host.loading import load_plugins, split_specs

    ctx = click.get_current_context(silent=True)
    include, block = split_specs((ctx.find_root().params.get("plugin_flags") if ctx is not None else None) or ())
    return load_plugins(include=include, block=block, strict=False)


def complete_component(kind: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """Shell completion of a ``kind``'s component names, from the registry (imports no torch)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            registry = _completion_host().registry
        except Exception:  # noqa: BLE001 - a completion never fails the prompt
            return []
        return [CompletionItem(registry.select_as(r), help=r.help) for r in registry.list(kind)
                if registry.select_as(r).startswith(incomplete)]

    return complete


def complete_option(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of ``-o``: ``KIND.OPTION=`` for the components chosen so far on the line
    (or the defaults), each with its type and default."""
    from ..kinds import ROWS
    from ..run.config import RunConfig

    if "=" in incomplete:
        return []
    try:
        registry = _completion_host().registry
        items = []
        for row in ROWS:
            chosen = ctx.params.get(row.setting) or getattr(RunConfig(), row.setting)
            for name in (chosen if row.many else [chosen]):
                record = registry.get(row.name, name)
                for option in options_of(record):
                    text = f"{row.target(name)}.{option.name}="
                    if text.startswith(incomplete):
                        items.append(CompletionItem(text, help=f"{option.type}; {option.help}".rstrip("; ")))
    except Exception:  # noqa: BLE001 - an unknown name typed so far: nothing to offer
        return []
    return items
