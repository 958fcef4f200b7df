"""A non-finite loss stops the run at once, says where and what to do, and the run
folder keeps the last good checkpoint and every metric so far."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.errors import DivergenceError
from fmclf.host.loading import load_plugins
from fmclf.run.config import RunConfig
from fmclf.run.plan import assemble, resolve
from fmclf.train.engine import Trainer


def common(data: pathlib.Path) -> list[str]:
    """Six batches an epoch (96 examples of 16)."""
    return ["-p", "chaos_plugin", "run", "--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16",
            "--epochs", "3", "--seed", "3", "--device", "cpu", "--visualizer", "none"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_inf_loss_in_epoch_2_stops_and_keeps_epoch_1(tiny_data, tmp_path):
    run_dir, one_epoch = tmp_path / "run", tmp_path / "one-epoch"
    result = invoke(*common(tiny_data), "--loss", "inf-at", "-o", "loss.at_call=9",
                    "--out", str(run_dir))  # epoch 2, batch 3
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert message.startswith("Error: training diverged: the loss became inf on batch 3 of 6 in epoch 2 with loss "
                              "'inf-at' (plugin 'chaos_plugin').")
    assert "Try a smaller --lr, or --loss fused" in message
    assert f"The run folder {run_dir} keeps its last good checkpoint (after epoch 1)" in message
    assert "Traceback" not in result.output
    assert "epoch 1/3" in result.output and "epoch 2/3" not in result.output

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in metrics] == [1]
    assert all(math.isfinite(row["train_loss"]) for row in metrics)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 1 and checkpoint["state"]["batch"] == 0
    assert not (run_dir / "model.pt").exists()

    # the checkpoint holds exactly the weights after epoch 1
    assert invoke(*common(tiny_data), "--epochs", "1", "--loss", "inf-at", "-o", "loss.at_call=0",
                  "--out", str(one_epoch)).exit_code == 0
    after_one = torch.load(one_epoch / "model.pt", weights_only=True)
    for key, value in after_one.items():
        assert torch.equal(checkpoint["model"][key], value)


def test_on_cpu_the_bad_batch_never_reaches_the_weights(tiny_data):
    """The loss is checked before the update: the model in memory is still finite."""
    host = load_plugins(include=["chaos_plugin"])
    config = RunConfig(model="scratch", loss="inf-at", visualizers=["none"], device="cpu", epochs=1, batch_size=16,
                       seed=3,
                       options={"dataset": {"data_root": str(tiny_data), "verify": "false"}, "loss": {"at_call": "2"}})
    plan = resolve(config, host)
    parts = assemble(plan, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    trainer = Trainer(parts, device=torch.device("cpu"), epochs=1)
    with pytest.raises(DivergenceError) as info:
        trainer.fit()
    assert (info.value.epoch, info.value.batch) == (1, 2)
    after = parts.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # batch 1 was applied, batch 2 was not


def test_weights_that_overflow_with_a_finite_loss_are_not_checkpointed(tiny_data, tmp_path):
    """nan written into the weights by the last update of epoch 2: every loss of that
    epoch was finite, yet epoch 2 is not saved over the good epoch 1."""
    run_dir = tmp_path / "run"
    result = invoke(*common(tiny_data), "--updater", "poison", "-o", "updater.at_step=12", "--out", str(run_dir))
    assert result.exit_code == 1, result.output
    assert "the model's weights became inf or nan in epoch 2 although every batch loss was finite" in result.stderr
    assert "keeps its last good checkpoint (after epoch 1)" in result.stderr
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_the_textbooks_naive_loss_overflowing_points_to_the_fused_loss(tiny_data, tmp_path):
    """The real failure: raw 0-255 pixels and a large step make the naive softmax overflow."""
    run_dir = tmp_path / "run"
    result = invoke(*common(tiny_data), "--loss", "naive", "-o", "dataset.raw_pixels=true", "--lr", "1",
                    "--out", str(run_dir))
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert "Error: training diverged: the loss became " in message
    assert " in epoch " in message and " on batch " in message
    assert "with loss 'naive'" in message and "use --loss fused, or a smaller --lr" in message
    assert (run_dir / "config.toml").exists()


def test_a_loss_with_a_divergence_hint_gives_its_own_advice(fmclf_plugin, tiny_data, tmp_path):
    """The advice comes from the loss (DESIGN.md's `divergence_hint`), not from a list of names in the core."""
    import types

    import fmclf

    class Hinted:
        divergence_hint = "Lower -o loss.sharpness; this loss multiplies the logits by it."

        def __call__(self, logits, y):
            return torch.nn.functional.cross_entropy(logits, y, reduction="none") + float("inf")

    hooks = fmclf.hookimpl(lambda register: register("hinted", lambda: Hinted()))
    fmclf_plugin(types.SimpleNamespace(register_losses=hooks), name="hint-plugin")
    result = CliRunner().invoke(cli, [
        "run", "--seed", "1", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--loss", "hinted",
        "--batch-size", "16",
        "--epochs", "1", "--device", "cpu", "--visualizer", "none", "--out", str(tmp_path / "run"),
    ])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        "Error: training diverged: the loss became inf on batch 1 of 6 in epoch 1 "
        "with loss 'hinted' (plugin 'hint-plugin'). Lower -o loss.sharpness; this loss multiplies the logits by it. "
        "The run folder "
    ), result.stderr
    assert "Try a smaller --lr" not in result.stderr and "naive" not in result.stderr
