"""Rows of metrics as loggers write them: every numeric value, whatever its key.

A metrics row (one epoch of metrics.jsonl) holds numbers (``train_loss``,
``test_acc``, a plugin metric's ``test_NAME``) and dicts of numbers
(``per_class_test_acc``, a metric's ``test_NAME`` dict); loggers take every
one of them, never a fixed list, so a metric a plugin adds is logged too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fmclf.numbers import is_number


def scalars(row: dict[str, Any], *, nested: bool = True, sep: str = "/") -> dict[str, int | float]:
    """Every number of ``row``, in its order; with ``nested``, a dict of numbers gives
    ``KEY/SUBKEY`` entries (``per_class_test_acc/t-shirt``). Other values are left out."""
    out: dict[str, int | float] = {}
    for key, value in row.items():
        if is_number(value):
            out[str(key)] = value
        elif nested and isinstance(value, dict):
            for sub, inner in value.items():
                if is_number(inner):
                    out[f"{key}{sep}{sub}"] = inner
    return out


def columns(rows: Iterable[dict[str, Any]], first: str = "epoch") -> list[str]:
    """The union of the rows' keys in the order they first appear, ``first`` leading."""
    seen: dict[str, None] = {first: None}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def cell(value: float | None) -> str:
    """A CSV cell: the number as Python writes it (floats in full, so they read back exactly), blank when absent."""
    return "" if value is None else repr(value)
