"""What the flags several commands share turn into: ``-o KIND.OPTION=VALUE``
assignments gathered by option target, and ``--data-root`` checked against
the data set it goes to."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Iterable

import click

from ..errors import OptionError
from ..host.options import options_of, parse_assignment

#: The data-set option that ``--data-root`` sets.
DATA_ROOT = "data_root"


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
