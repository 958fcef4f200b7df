"""What the flags several commands share turn into: ``-o KIND.OPTION=VALUE``
assignments gathered by option target, and ``--data-root`` checked against
the data set it goes to."""

from __future__ import annotations

from typing import Any, Iterable

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
