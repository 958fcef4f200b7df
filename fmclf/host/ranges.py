"""Bounds for numeric options (``Annotated[float, fmclf.Range(0, 1)]``), enforced by the option parser for every
component before any work. Floats are finite unless they say otherwise: docs/plugins.md, "Bounds", has the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..numbers import is_number


@dataclass(frozen=True)
class Range:
    """Bounds for an ``int`` or ``float`` option, or for each element of a list of them.

    ``min`` and ``max`` are included unless ``min_open`` / ``max_open`` (then the bound itself is
    refused: ``Range(0, min_open=True)`` is "above 0"); None leaves that side open. ``inf`` lets a
    float option take ``inf`` / ``-inf`` (when within the bounds).
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    inf: bool = False

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            bound = getattr(self, name)
            if bound is not None and (not is_number(bound) or math.isnan(bound)):
                raise TypeError(f"Range({name}=...) must be a number or None, got {bound!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"Range: min {self.min} is above max {self.max}")

    def __str__(self) -> str:
        low, high = self.min, self.max
        if low is not None and high is not None:
            return f"in {'(' if self.min_open else '['}{_num(low)}, {_num(high)}{')' if self.max_open else ']'}"
        if low is not None:
            return f"{'>' if self.min_open else '>='} {_num(low)}"
        if high is not None:
            return f"{'<' if self.max_open else '<='} {_num(high)}"
        return "any number" if self.inf else "finite"

    def contains(self, value: float) -> bool:
        """Whether ``value`` is within the bounds (nan never is)."""
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            return False
        return not (self.max is not None and (value > self.max or (self.max_open and value == self.max)))


def _num(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)


def check_number(value: Any, bounds: Range | None, *, is_float: bool, allow_inf: bool) -> None:
    """Raise ``ValueError`` (for the option parser to report) when ``value`` is nan, an infinity the
    option does not take, or outside ``bounds``."""
    if is_float and isinstance(value, float):
        if math.isnan(value):
            raise ValueError("nan is not a number this option can take")
        if math.isinf(value) and not (allow_inf or (bounds is not None and bounds.inf)):
            raise ValueError(f"{value} is not a finite number, and this option takes only finite ones")
    if bounds is not None and not bounds.contains(value):
        raise ValueError(f"{_num(value)} is not {bounds}")
    if not is_float and isinstance(value, int) and not -(2**63) <= value <= 2**63 - 1:
        raise ValueError(f"{value} is out of range: whole numbers are 64-bit, from -2**63 to 2**63 - 1 (as in "
                         f"config.toml, and in torch)")
