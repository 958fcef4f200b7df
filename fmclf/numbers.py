"""What fmclf counts as a number in what it is handed or reads back (a setting, a bound, a metric, a row of
metrics.jsonl): an int or a float, never a bool, which Python counts as an int. Importing it is light."""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any, *, finite: bool = False) -> bool:
    """Whether ``value`` is an int or a float (a bool is not); with ``finite``, neither inf nor nan."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (not finite or math.isfinite(value))


def is_whole(value: Any) -> bool:
    """Whether ``value`` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)
