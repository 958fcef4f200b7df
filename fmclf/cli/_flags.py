"""What the flags several commands share turn into: ``-o KIND.OPTION=VALUE``
assignments, gathered by option target."""

from __future__ import annotations

from typing import Any, Iterable

from ..host.options import parse_assignment


def gather_options(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``-o`` assignments as ``{target: {option: text}}``; a later one for the same option wins."""
    options: dict[str, dict[str, Any]] = {}
    for text in texts:
        target, key, value = parse_assignment(text)
        options.setdefault(target, {})[key] = value
    return options
