"""Benchmark group ``loss-speed``: forward + backward of naive, fused and torch's
``F.cross_entropy(..., reduction="none")``, per shape N x C.

    pytest tests/benchmarks/test_loss_speed.py --benchmark-enable --benchmark-group-by=param:shape

prints one table per shape, then the ratios fused/torch and naive/torch side
by side. Those ratios are measured interleaved (windows of fused, then torch,
then fused again ..., the fastest window of each): on a machine shared with
other work, timing one loss after the other lets the load decide. The target:
fused no slower than torch at every shape. 16384 x 32000 needs several GB per
loss: it runs only when the machine has the memory free, and only when timing
(an untimed single pass there proves nothing the smaller shapes do not).
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

import loss_stress as S

SHAPES = [(256, 10), (4096, 10), (4096, 1000), (16384, 32000)]
HUGE = 16384 * 32000

#: Peak memory of one forward + backward, in multiples of the logits' size
#: (measured at 16384 x 32000: naive 7.1, torch 4.2, fused 3.2), plus room.
PEAK = {"naive": 7.5, "torch": 4.5, "fused": 3.5}

_best: dict[tuple[str, str], float] = {}  # (shape, loss) -> fastest round, for the summary
_ratio: dict[tuple[str, str], float] = {}  # (shape, loss) -> its time over torch's, interleaved
_current: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # one shape's inputs at a time


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def inputs(N: int, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits N(0, 3^2) and targets, kept while this shape's benchmarks run."""
    if (N, C) not in _current:
        _current.clear()  # free the previous shape first
        g = torch.Generator().manual_seed(N + C)
        _current[(N, C)] = (torch.randn(N, C, generator=g).mul_(3.0), torch.randint(0, C, (N,), generator=g))
    return _current[(N, C)]


def step(loss, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward and backward, as a training step does them."""
    x.grad = None
    loss(x, y).sum().backward()


def interleaved_ratio(loss, x: torch.Tensor, y: torch.Tensor, windows: int, seconds: float = 0.01) -> float:
    """``loss``'s time over torch's: alternate windows of each, keep each one's fastest."""
    t0 = time.perf_counter()
    step(S.LOSSES["torch"], x, y)
    reps = max(1, int(seconds / max(time.perf_counter() - t0, 1e-7)))
    best = {"loss": math.inf, "torch": math.inf}
    for _ in range(windows):
        for name, fn in (("loss", loss), ("torch", S.LOSSES["torch"])):
            t0 = time.perf_counter()
            for _ in range(reps):
                step(fn, x, y)
            best[name] = min(best[name], (time.perf_counter() - t0) / reps)
    return best["loss"] / best["torch"]


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    """After the module: fused/torch and naive/torch per shape, from the fastest rounds."""
    yield
    _current.clear()
    shapes = sorted({s for s, _ in _best}, key=lambda s: [int(v) for v in s.split("x")])
    if not shapes:
        return
    lines = ["", "loss-speed: forward + backward, fastest round; ratios to torch's cross_entropy measured interleaved",
             f"{'shape':>12}  {'torch':>11} {'fused':>11} {'naive':>11}  {'fused/torch':>11}  {'naive/torch':>11}"]
    for shape in shapes:
        times = [_best.get((shape, name)) for name in ("torch", "fused", "naive")]
        ratios = [_ratio.get((shape, name)) for name in ("fused", "naive")]
        lines.append(f"{shape:>12}  " + " ".join(f"{t * 1e3:9.3f}ms" if t else f"{'-':>11}" for t in times) + "  "
                     + "  ".join(f"{r:11.2f}" if r else f"{'-':>11}" for r in ratios))
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            for line in lines:
                reporter.write_line(line)


@pytest.mark.parametrize("loss", ["torch", "fused", "naive"])
@pytest.mark.parametrize("shape", [f"{N}x{C}" for N, C in SHAPES])
def test_loss_speed(benchmark, shape, loss):
    N, C = (int(v) for v in shape.split("x"))
    if N * C >= HUGE:
        if benchmark.disabled:
            pytest.skip(f"{shape} runs only when timing (--benchmark-enable): a single untimed pass takes minutes "
                        "and checks nothing the smaller shapes do not")
        need, have = int(PEAK[loss] * N * C * 4) + (1 << 30), available_memory()
        if have is None or have < need:
            free = "unknown" if have is None else f"{have / 2**30:.1f} GiB"
            pytest.skip(f"{shape} with {loss} needs about {need / 2**30:.1f} GiB of free memory; this machine has {free}")
    logits, y = inputs(N, C)
    x = logits.clone().requires_grad_(True)
    fn = S.LOSSES[loss]
    benchmark.group = "loss-speed"
    benchmark.extra_info.update(label=f"{loss} {N}×{C}", shape=shape)
    if loss != "torch":
        benchmark.extra_info["vs"] = f"torch {N}×{C}"
    if N * C >= HUGE:
        benchmark.pedantic(step, args=(fn, x, y), rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(step, fn, x, y)
    assert x.grad is not None and x.grad.shape == (N, C)
    if loss == "fused":  # the inputs are moderate: fused must match torch here, not just be fast
        ref = S.LOSSES["torch"](logits[:64], y[:64])
        assert torch.allclose(fn(logits[:64], y[:64]), ref, rtol=1e-5, atol=1e-6)
    if benchmark.stats is not None:
        _best[(shape, loss)] = benchmark.stats.stats.min
        if loss != "torch":
            ratio = interleaved_ratio(fn, x, y, windows=3 if N * C >= HUGE else 30)
            _ratio[(shape, loss)] = benchmark.extra_info["vs_torch_interleaved"] = round(ratio, 3)
