"""``--seeds auto``: seeds added, round by round, until each cell's difference from the best is resolved.

A round trains every cell on its current number of seeds; then each cell other
than the best whose difference from the best is not resolved yet (the
bootstrap 95% interval of the paired difference, on the ranking metric,
includes 0) gets more seeds, up to the cap; the best cell always has as many
seeds as the most any cell has, since the differences are paired by seed.
A cell stops with the reason "resolved", "cap" (the cap is reached and its
difference is still within noise) or "best". Seeds are added, never dropped,
so the same command again repeats the same decisions on the runs it keeps.

Adding seeds until an interval excludes 0 is optional stopping: the intervals
are 95% intervals of each round, not of the whole procedure. Importing this
module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .grid import MAX_SEEDS, check_count
from .results import CellResult
from .stats import FEW_SEEDS

#: The seeds every cell starts with (the fewest a conclusion is not flagged for), and the default cap.
START, DEFAULT_CAP = FEW_SEEDS, 20
#: Why a cell got no more seeds.
RESOLVED, CAP, BEST = "resolved", "cap", "best"


@dataclass(frozen=True)
class AutoSeeds:
    """``--seeds auto[:CAP]``: start with ``start`` seeds per cell, add up to ``cap``."""

    cap: int = DEFAULT_CAP
    start: int = START

    def grow(self, n: int) -> int:
        """The next number of seeds after ``n``: half as many again (at least 2 more), at most the cap."""
        return min(self.cap, n + max(2, n // 2))

    def as_dict(self) -> dict[str, Any]:
        """The protocol's JSON form (compare.json's ``seeds_auto``, beside each cell's outcome)."""
        return {"start": self.start, "cap": self.cap, "rule": "add seeds to a cell until the bootstrap 95% interval "
                "of its difference from the best cell excludes 0, or the cap is reached"}


def parse(text: str) -> tuple[int, AutoSeeds | None]:
    """``--seeds N`` -> (N, None); ``auto`` or ``auto:CAP`` -> (the seeds to start with, the rule)."""
    word = str(text).strip()
    if word.isdigit():
        return int(word), None
    head, _, cap_text = word.partition(":")
    if head == "auto" and (not cap_text or cap_text.isdigit()):
        cap = int(cap_text) if cap_text else DEFAULT_CAP
        check_count("--seeds auto:", cap, MAX_SEEDS, "seeds a cell may get")
        if cap < 2:
            raise UsageError(f"--seeds auto:{cap} leaves no room to add seeds; give a cap of at least 2 "
                             f"(auto alone: {DEFAULT_CAP}).")
        rule = AutoSeeds(cap=cap, start=min(START, cap))
        return rule.start, rule
    raise UsageError(f"--seeds {text!r} is neither a number nor auto: give the seeds each cell runs with "
                     f"(--seeds 5), or --seeds auto (or auto:CAP) to add seeds until each difference from the best "
                     f"is resolved, at most CAP ({DEFAULT_CAP} unless given).")


@dataclass
class Decision:
    """One round's outcome: each cell's seeds for the next round, and why a cell got no more."""

    counts: dict[str, int]
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len(self.stopped) == len(self.counts)


def resolved(result: CellResult) -> bool:
    """Whether ``result``'s difference from the best is resolved: its bootstrap interval (else its t
    interval) excludes 0. A cell without a paired comparison (fewer than 2 shared seeds) is not."""
    paired = result.vs_best
    if paired is None or paired.n < 2:
        return False
    if paired.bootstrap is not None:
        low, high = paired.bootstrap
        return low > 0 or high < 0
    return bool(paired.beyond_noise)


def decide(rule: AutoSeeds, ranked: Sequence[CellResult], counts: dict[str, int]) -> Decision:
    """The seeds each cell (by name) gets next, given the ranked results of ``counts`` seeds each.

    A cell without a finished run (all failed) stops with the cap's reason: more seeds would not rank it."""
    out = dict(counts)
    stopped: dict[str, str] = {}
    best = ranked[0].cell.name if ranked and ranked[0].vs_best is None and ranked[0].values else None
    for result in ranked:
        name = result.cell.name
        if name == best:
            continue
        if resolved(result):
            stopped[name] = RESOLVED
        elif counts[name] >= rule.cap or not result.values:
            stopped[name] = CAP
        else:
            out[name] = rule.grow(counts[name])
    if best is not None:
        out[best] = max(out.values())  # the best is paired with every cell on every seed it has
        if all(name in stopped for name in out if name != best):
            stopped[best] = BEST
    return Decision(out, stopped)
