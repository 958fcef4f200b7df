"""The naive loss fails where the textbook says, measured; on the real data it diverges where fused trains."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf_plugins.cross_entropy import naive_cross_entropy
from fmclf_plugins.fused_cross_entropy import fused_cross_entropy


def naive(rows, y, dtype=torch.float32):
    return naive_cross_entropy(torch.tensor(rows, dtype=dtype), torch.tensor(y))


@pytest.mark.parametrize(("dtype", "fine", "broken"), [(torch.float32, 88.0, 89.0), (torch.float16, 11.0, 11.2),
                                                        (torch.bfloat16, 88.0, 89.0), (torch.float64, 709.0, 710.0)])
def test_naive_overflows_just_past_exps_limit(dtype, fine, broken):
    # exp overflows past ln(max): 88.72 in float32 and bfloat16, 11.09 in float16, 709.78 in float64
    assert torch.isfinite(naive([[fine, 0.0, 0.0]], [0], dtype)).all()
    assert math.isnan(naive([[broken, 0.0, 0.0]], [0], dtype).item())  # inf / inf
    assert torch.isfinite(fused_cross_entropy(torch.tensor([[broken, 0.0, 0.0]], dtype=dtype), torch.tensor([0]))).all()


@pytest.mark.parametrize(("gap", "finite"), [(80.0, True), (110.0, False)])
def test_naive_underflows_when_the_target_is_far_below_the_maximum(gap, finite):
    # exp(-gap) is 0 in float32 below about -103.3 (its smallest subnormal), and -log 0 = inf
    loss = naive([[0.0, gap, 0.0]], [0])
    assert bool(torch.isfinite(loss).all()) is finite
    assert (fused_cross_entropy(torch.tensor([[0.0, gap, 0.0]]), torch.tensor([0])).item()
            == pytest.approx(gap, rel=1e-6))


def test_naive_is_right_where_nothing_overflows():
    logits, y = torch.randn(50, 10, dtype=torch.float64) * 3, torch.randint(0, 10, (50,))
    assert torch.allclose(naive_cross_entropy(logits, y), fused_cross_entropy(logits, y), rtol=1e-12)


def test_naive_takes_probability_targets_as_the_textbook_writes_them():
    logits = torch.randn(6, 4, dtype=torch.float64)
    q = torch.softmax(torch.randn(6, 4, dtype=torch.float64), dim=1)
    assert torch.allclose(naive_cross_entropy(logits, q), F.cross_entropy(logits, q, reduction="none"), rtol=1e-12)


# -- on the real data -------------------------------------------------------------------


def train_raw_pixels(real_data, out, loss):
    """One epoch of the textbook's softmax regression on raw 0-255 pixels.

    With pixels up to 255 the initial logits (W ~ N(0, 0.01)) already spread by
    more than 100 within a row, so the naive loss's exp underflows (p_y = 0,
    loss inf) on the very first batch; fused's loss is large but finite and
    training goes on.
    """
    return CliRunner().invoke(cli, ["run", "--data-root", str(real_data), "--loss", loss,
                                    "-o", "dataset.raw_pixels=true", "--epochs", "1", "--seed", "0", "--device", "cpu",
                                    "--visualizer", "none", "--out", str(out)])


@pytest.mark.realdata
def test_on_raw_pixels_naive_diverges_and_fused_keeps_training(real_data, tmp_path):
    naive_run = train_raw_pixels(real_data, tmp_path / "naive", "naive")
    assert naive_run.exit_code == 1, naive_run.output
    assert "training diverged: the loss became inf on batch 1" in naive_run.output
    assert "use --loss fused" in naive_run.output

    fused_run = train_raw_pixels(real_data, tmp_path / "fused", "fused")
    assert fused_run.exit_code == 0, fused_run.output
    (epoch,) = [json.loads(line) for line in (tmp_path / "fused" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(epoch["train_loss"])
    assert epoch["test_acc"] > 0.3  # it learned (chance is 0.1), raw pixels and all
