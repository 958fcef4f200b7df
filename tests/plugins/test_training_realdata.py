"""Softmax regression on the real Fashion-MNIST, held to the textbook's own assertions."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def train(real_data, out, model, loss, seed=0, epochs=10):
    result = CliRunner().invoke(cli, ["run", "--data-root", str(real_data), "--model", model, "--loss", loss,
                                      "--epochs", str(epochs), "--seed", str(seed), "--device", "cpu",
                                      "--visualizer", "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("model", ["scratch", "nn"])
@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_textbook_assertions_hold_for_every_model_and_loss(real_data, tmp_path, model, loss):
    summary = train(real_data, tmp_path / "run", model, loss)
    # d2l's train_ch3 asserts exactly these after 10 epochs
    assert summary["train_loss"] < 0.5, summary
    assert 0.7 < summary["train_acc"] <= 1, summary
    assert 0.7 < summary["test_acc"] <= 1, summary


def test_scratch_and_nn_agree_with_the_same_seed(real_data, tmp_path):
    scratch = train(real_data, tmp_path / "scratch", "scratch", "fused", seed=7)
    nn = train(real_data, tmp_path / "nn", "nn", "fused", seed=7)
    assert abs(scratch["test_acc"] - nn["test_acc"]) <= 0.01, (scratch, nn)
    assert 0.80 <= scratch["test_acc"] <= 0.86  # around the textbook's 0.83
