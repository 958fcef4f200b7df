"""Benchmark group ``stability``: naive, fused and torch on every stress case.

Each benchmark times one loss's forward and backward on one case and puts
its largest relative errors against the float64 reference in ``extra_info``
(``loss_error``, ``grad_error``, and how many rows went inf or nan). It also
checks that docs/stability.md still says the same about where each loss
fails, so the published table (written by ``fmclf bench loss``) cannot drift
from what the code does.

    pytest tests/benchmarks/test_stability.py --benchmark-enable --benchmark-json=stability.json
"""

from __future__ import annotations

import math
import pathlib

import pytest

from fmclf.compare.bench import BASELINE, published_failures

import loss_stress as S

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "stability.md"
NAMES = {"torch": BASELINE}  # this suite's name for torch's loss -> the table's

GRID = [(case, dtype, loss) for case, dtype in S.grid() for loss in S.LOSSES]


@pytest.fixture(scope="module")
def published():
    """(case, dtype, loss) -> "inf"/"nan" for the failing cells of docs/stability.md."""
    return published_failures(DOC.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("case", "dtype", "loss"), GRID, ids=[f"{c.name}-{d}-{name}" for c, d, name in GRID])
def test_stability(benchmark, published, case, dtype, loss):
    logits, y = case.make(dtype)
    fn = S.LOSSES[loss]
    benchmark.group = "stability"
    result = S.measure(case, dtype, loss)
    benchmark.extra_info.update(
        label=f"{loss} {case.name} {dtype}",
        loss_error=result["loss_error"] if math.isfinite(result["loss_error"]) else str(result["loss_error"]),
        grad_error=result["grad_error"] if math.isfinite(result["grad_error"]) else str(result["grad_error"]),
        loss_nonfinite_rows=result["loss_nonfinite"],
        grad_nonfinite_entries=result["grad_nonfinite"],
        readme=False,  # errors, not speed: docs/stability.md is their table
    )
    # the errors are the point here; a few rounds time it well enough
    benchmark.pedantic(S.run, args=(fn, logits, y), rounds=5, warmup_rounds=1)

    failed = ("nan" if result["loss_nan"] else "inf") if result["loss_nonfinite"] else None
    assert published.get((case.what, dtype, NAMES.get(loss, loss))) == failed, (
        f"docs/stability.md is out of date for {loss} on {case.name} ({dtype}); "
        "run `fmclf bench loss naive fused --no-speed --update docs/stability.md`"
    )
    if loss == "fused":
        assert failed is None and result["grad_nonfinite"] == 0
        assert result["loss_error"] <= S.tolerance(S.DTYPES[dtype], "loss")
