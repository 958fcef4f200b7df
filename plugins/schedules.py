"""Learning-rate schedules as one function of the step: the factor ``LambdaLR`` multiplies the rate by.

A closed form per step, not torch's chained schedulers: the same step always
gives the same rate (no drift from recursive updates). A run resumed with more
``--epochs`` keeps the schedule it was built with (fmclf builds its updater for
the epochs the run started with); past its end cosine and onecycle hold their
last rate and step goes on dropping, so the rate never jumps back up.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _anneal(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1), as torch's OneCycleLR anneals."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def factor(schedule: str, total: int, warmup: int, *, step_steps: int = 1, gamma: float = 0.1, floor: float = 0.0,
           div: float = 25.0, final_div: float = 1e4) -> Callable[[int], float]:
    """The factor of step ``s`` (0-based, counting batches) of a run of ``total`` steps.

    ``warmup`` steps rise linearly to 1 first (for ``onecycle``: the length of its rise,
    by default 30% of the run). Then ``constant`` stays at 1; ``step`` multiplies by
    ``gamma`` every ``step_steps``; ``cosine`` falls to ``floor`` at the end of the run;
    ``onecycle`` is torch's OneCycleLR: up from ``1/div`` to 1, then down to ``1/(div*final_div)``.
    """
    total = max(int(total), 1)
    if schedule == "onecycle":
        up = warmup or max(1, round(0.3 * total))
        up = min(up, total - 1) if total > 1 else 1
        low, end = 1.0 / div, 1.0 / (div * final_div)

        def onecycle(s: int) -> float:
            if s < up:
                return _anneal(low, 1.0, s / max(up - 1, 1))
            return _anneal(1.0, end, min((s - up + 1) / max(total - up, 1), 1.0))

        return onecycle

    def shaped(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if schedule == "step":
            return gamma ** (s // step_steps)
        if schedule == "cosine":
            pct = min((s - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * pct))
        return 1.0

    return shaped
