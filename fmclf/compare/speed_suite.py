"""The pytest module ``fmclf bench loss`` runs to time losses with pytest-benchmark.

Not a test of fmclf: :func:`fmclf.compare.bench.time_losses` passes this file
to ``pytest.main`` with a plugin object that parametrizes
``fmclf_bench_case`` over every (shape, loss) to time, each shape's losses
side by side (torch's ``F.cross_entropy`` first), and reads the timings back
from ``--benchmark-json``.
"""

from __future__ import annotations

from fmclf.compare.stress import speed_inputs, step


def test_forward_backward(benchmark, fmclf_bench_case):
    """One forward and backward of the case's loss on N x C logits."""
    case = fmclf_bench_case
    loss = case.build()
    logits, y = speed_inputs(case.rows, case.classes, case.device)
    x = logits.requires_grad_(True)
    benchmark.group = case.shape
    benchmark.extra_info.update(loss=case.name, shape=case.shape)
    if x.device.type == "cuda":
        import torch

        def timed(loss, x, y):
            step(loss, x, y)
            torch.cuda.synchronize(x.device)
    else:
        timed = step
    benchmark(timed, loss, x, y)
    assert x.grad is not None and tuple(x.grad.shape) == (case.rows, case.classes)
