"""Group ``batched``: one comparison grid trained as batched groups and as separate runs, in one benchmark run.

The grid of issue 23: softmax regression, 2 cells (scratch and nn, fused loss,
sgd) x 6 learning rates x 10 seeds = 120 runs of 10 epochs, on the real data.
Batched, the runs that differ only in seed and rate are one group, one
process; separately, each is an ``fmclf run`` of its own, one after the
other in the same process, as ``fmclf compare --no-batch`` (``--jobs 1``)
trains them: no interpreter or torch start-up per run, so the ratio is the
conservative one. Both go through :func:`fmclf.compare.engine.run_comparison`
with the same executor, and the test prints the ratio.

``tox -e bench`` times it; the normal test run executes it once, untimed
(``--benchmark-disable``), on a grid of 4 runs of one epoch on tiny data.
"""

from __future__ import annotations

import copy
import time

from fmclf.compare.engine import run_comparison
from fmclf.compare.executor import InProcessExecutor
from fmclf.compare.grid import Cell
from fmclf.host.loading import load_plugins
from fmclf.run.config import RunConfig

from helpers import write_tiny_fashion

MODELS = ("scratch", "nn")
RATES = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)


def _cells(data_root, rates, epochs: int, verify: bool) -> list[Cell]:
    cells = []
    for model in MODELS:
        for lr in rates:
            config = RunConfig(model=model, loss="fused", updater="sgd", lr=lr, epochs=epochs, visualizers=["none"],
                               options={"dataset": {"data_root": str(data_root), "verify": verify}})
            cells.append(Cell({"model": model}, {"lr": str(lr)}, copy.deepcopy(config)))
    return cells


def test_batched_grid_against_separate_runs(benchmark, tmp_path, request):
    timed = not benchmark.disabled
    if timed:
        data_root = request.getfixturevalue("real_data")
        rates, seeds, epochs, verify = RATES, list(range(10)), 10, True
    else:  # once, untimed, in the normal suite: small and quick
        data_root = write_tiny_fashion(tmp_path / "tiny")
        rates, seeds, epochs, verify = RATES[:1], [0, 1], 1, False
    host = load_plugins()
    cells = _cells(data_root, rates, epochs, verify)

    def compare(name: str, batch: bool):
        return run_comparison(cells, seeds=seeds, out=tmp_path / name, host=host, executor=InProcessExecutor(),
                              batch=batch, echo=lambda _text: None)

    start = time.perf_counter()
    alone = compare("alone", False)
    separate = time.perf_counter() - start
    start = time.perf_counter()
    batched = benchmark.pedantic(lambda: compare("batched", True), rounds=1, iterations=1)
    together = time.perf_counter() - start
    runs = len(cells) * len(seeds)
    assert alone.trained == batched.trained == runs
    by_cell = {r.cell.name: r for r in alone.results}
    for b in batched.results:  # every member is the run it would have been alone
        a = by_cell[b.cell.name]
        for seed, acc in b.values["test_acc"].items():
            assert abs(acc - a.values["test_acc"][seed]) <= 0.002, (b.cell.name, seed)
    ratio = separate / together
    benchmark.extra_info.update(runs=runs, epochs=epochs, separate_seconds=round(separate, 2),
                                batched_seconds=round(together, 2), ratio=round(ratio, 2))
    print(f"\nbatched: {runs} runs x {epochs} epochs: separately {separate:.1f} s, batched {together:.1f} s: "
          f"{ratio:.1f}x faster batched")
