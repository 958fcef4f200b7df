"""Group ``batched``: one comparison grid trained as batched groups and as separate runs, in one benchmark run.

The grid of issue 23: softmax regression, 2 cells (scratch and nn, fused loss,
sgd) x 6 learning rates x 10 seeds = 120 runs of 10 epochs, on the real data.
Batched, the runs that differ only in seed and rate are one group per model,
one process; separately (``--no-batch``), each is a run of its own, one after
the other in the comparison's process (``--jobs 1``): no interpreter or torch
start-up per run, so the ratio is the conservative one.

``tox -e bench`` (``--benchmark-enable``) times the whole grid both ways, each
as the command a user types (:data:`COMMAND`, a fresh ``fmclf compare``
process), interleaved on a noisy machine: batched, separately, batched again;
the ratio is the separate time over the mean of the two batched ones. It
prints the three times and the ratio. The separate side takes 10 minutes or
more on a 2-core machine. With benchmarks disabled (every other suite) the
same comparison runs once, untimed and in this process, on a grid of 4 runs of
one epoch on tiny data, and checks that every member is the run it would
have been alone.
"""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
import time

from fmclf.compare.comparison import run_comparison
from fmclf.compare.executor import InProcessExecutor
from fmclf.compare.grid import Cell
from fmclf.host.loading import load_plugins
from fmclf.run.config import RunConfig

from helpers import write_tiny_fashion

MODELS = ("scratch", "nn")
RATES = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
SEEDS, EPOCHS = 10, 10
#: The timed grid as a user runs it (``--data-root`` and ``--out`` are added, and ``--no-batch`` for the other side).
COMMAND = ("fmclf compare --model scratch --model nn --loss fused " + " ".join(f"--lr {r}" for r in RATES)
           + f" --seeds {SEEDS} --epochs {EPOCHS}")


def _cells(data_root, rates, epochs: int, verify: bool) -> list[Cell]:
    cells = []
    for model in MODELS:
        for lr in rates:
            config = RunConfig(model=model, loss="fused", updater="sgd", lr=lr, epochs=epochs, visualizers=["none"],
                               options={"dataset": {"data_root": str(data_root), "verify": verify}})
            cells.append(Cell({"model": model}, {"lr": str(lr)}, copy.deepcopy(config)))
    return cells


def _check_members(alone, batched) -> None:
    """Every member of a group is the run it would have been alone (test accuracy within 0.002)."""
    by_cell = {r.cell.name: r for r in alone.results}
    for b in batched.results:
        a = by_cell[b.cell.name]
        for seed, acc in b.values["test_acc"].items():
            assert abs(acc - a.values["test_acc"][seed]) <= 0.002, (b.cell.name, seed)


def _timed(data_root, out, batch: bool) -> float:
    """Seconds of one fresh ``fmclf compare`` process training the grid, batched or ``--no-batch``."""
    args = [*shlex.split(COMMAND)[1:], "--data-root", str(data_root), "--out", str(out)]
    if not batch:
        args.append("--no-batch")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fmclf", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def test_batched_grid_against_separate_runs(benchmark, tmp_path, request):
    if benchmark.disabled:  # once, untimed, in the normal suite: small and quick
        data_root = write_tiny_fashion(tmp_path / "tiny")
        host = load_plugins()
        cells = _cells(data_root, RATES[:1], 1, False)

        def compare(name: str, batch: bool):
            return run_comparison(cells, seeds=[0, 1], out=tmp_path / name, host=host,
                                  executor=InProcessExecutor(), batch=batch, echo=lambda _text: None)

        alone, batched = compare("alone", False), compare("batched", True)
        assert alone.trained == batched.trained == 4
        _check_members(alone, batched)
        return
    data_root = request.getfixturevalue("real_data")
    first = _timed(data_root, tmp_path / "batched-1", True)
    separate = _timed(data_root, tmp_path / "separate", False)
    again = benchmark.pedantic(lambda: _timed(data_root, tmp_path / "batched-2", True), rounds=1, iterations=1)
    together = (first + again) / 2
    ratio = separate / together
    runs = len(MODELS) * len(RATES) * SEEDS
    benchmark.extra_info.update(runs=runs, epochs=EPOCHS, separate_seconds=round(separate, 1),
                                batched_seconds=[round(first, 1), round(again, 1)], ratio=round(ratio, 2),
                                detail=f"{COMMAND} [--no-batch], fresh processes, interleaved")
    print(f"\nbatched: {runs} runs x {EPOCHS} epochs: batched {first:.1f} s, separately {separate:.1f} s, "
          f"batched again {again:.1f} s: {ratio:.1f}x faster batched")
