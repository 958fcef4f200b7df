"""Benchmark group ``loss-speed``: forward + backward of naive, fused and torch's
``F.cross_entropy(..., reduction="none")`` at the shapes ``fmclf bench loss`` times,
written as a plugin author writes theirs: over the ``fmclf_loss_shape`` fixture of
fmclf's pytest plugin.

    pytest tests/benchmarks/test_loss_speed.py --benchmark-enable --benchmark-group-by=group

README's loss-speed table is not made from here but by ``fmclf bench loss naive fused``
(the same shapes, timed by pytest-benchmark, ratios to torch's in the same run);
``--shapes 16384x32000`` adds the large shape there.
"""

from __future__ import annotations

import pytest
import torch

import loss_stress as S


@pytest.mark.parametrize("loss", ["torch", "fused", "naive"])
def test_loss_speed(benchmark, fmclf_loss_shape, loss):
    fn = S.LOSSES[loss]
    N, C = fmclf_loss_shape.rows, fmclf_loss_shape.classes
    benchmark.group = "loss-speed"
    benchmark.extra_info.update(label=f"{loss} {N}×{C}", shape=fmclf_loss_shape.id, readme=False)
    if loss != "torch":
        benchmark.extra_info["vs"] = f"torch {N}×{C}"
    benchmark(fmclf_loss_shape.step, fn)
    x, y = fmclf_loss_shape.inputs
    assert x.grad is not None and x.grad.shape == (N, C)
    if loss == "fused":  # the inputs are moderate: fused must match torch here, not just be fast
        logits = x.detach()
        ref = S.LOSSES["torch"](logits[:64], y[:64])
        assert torch.allclose(fn(logits[:64], y[:64]), ref, rtol=1e-5, atol=1e-6)


def test_the_fixture_builds_registered_losses_for_its_shape(fmclf_loss_shape):
    fused = fmclf_loss_shape.loss("fused")
    x, y = fmclf_loss_shape.inputs
    assert fused(x, y).shape == (fmclf_loss_shape.rows,)
    with pytest.raises(Exception, match="bad value for option 'label_smoothing'"):
        fmclf_loss_shape.loss("fused", label_smoothing="lots")
