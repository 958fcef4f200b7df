"""The command line through Click's CliRunner (in-process), on tiny data."""

from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def tiny_run(runner, tiny_data, out, *args):
    return runner.invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--seed", "1",
                               "-o", "dataset.download=false", "--batch-size", "16", "--epochs", "2",
                               "--visualizer", "none", "--device", "cpu", "--out", str(out), *args])


def test_run_writes_a_run_folder(runner, tiny_data, tmp_path):
    out = tmp_path / "run"
    result = tiny_run(runner, tiny_data, out, "--seed", "5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]
    assert any(line.startswith("final: train loss") for line in lines)
    assert f"run folder: {out}" in result.output
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["seed"] == 5 and config["model"] == "fmclf:scratch" and config["loss"] == "fmclf:fused"
    assert config["provenance"]["components"]["model"].startswith("fmclf:scratch")
    assert "fmclf.models" in config["provenance"]["plugins"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "train_acc", "test_acc", "per_class_test_acc", "seconds"}
    assert (out / "model.pt").exists() and (out / "checkpoint.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_acc"] == rows[-1]["test_acc"]


def test_same_seed_repeats_a_cpu_run_exactly(runner, tiny_data, tmp_path):
    for name in ("a", "b"):
        assert tiny_run(runner, tiny_data, tmp_path / name, "--seed", "11").exit_code == 0
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in "ab"]
    assert rows[0] == rows[1]
    import torch

    a, b = (torch.load(tmp_path / n / "model.pt", weights_only=True) for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_options_reach_the_component(runner, tiny_data, tmp_path):
    out = tmp_path / "run"
    result = tiny_run(runner, tiny_data, out, "--updater", "torch-sgd", "-o", "updater.momentum=0.5")
    assert result.exit_code == 0, result.output
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["options"]["updater"]["momentum"] == 0.5


def test_unknown_component_exits_2_with_a_suggestion(runner, tiny_data, tmp_path):
    result = tiny_run(runner, tiny_data, tmp_path / "run", "--loss", "fusd")
    assert result.exit_code == 2
    assert "unknown loss 'fusd' — did you mean 'fused'? available: fused, naive" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before any work


def test_ill_typed_option_lists_the_options(runner, tiny_data, tmp_path):
    result = tiny_run(runner, tiny_data, tmp_path / "run", "--updater", "torch-sgd", "-o", "updater.momentum=lots")
    assert result.exit_code == 2
    assert "'lots' is not a number" in result.output and "momentum (float in [0, 1], default 0.0)" in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_exits_2(runner, tiny_data, tmp_path):
    result = tiny_run(runner, tiny_data, tmp_path / "run", "--device", "cuda")
    assert result.exit_code == 2 and "device 'cuda' is not available" in result.output


def test_plugins_lists_components_with_owners_and_options(runner):
    result = runner.invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    out = result.output
    for name in ("fashion-mnist", "scratch", "nn", "naive", "fused", "sgd", "torch-sgd", "tqdm", "animator", "none"):
        assert f"  {name} " in out
    assert "fmclf.models" in out and "fmclf 0.1.0" in out
    assert "momentum" in out and "float = 0.0" in out


def test_plugins_json_and_kind_filter(runner):
    result = runner.invoke(cli, ["plugins", "--json", "--kind", "loss"])
    data = json.loads(result.output)
    assert {c["kind"] for c in data["components"]} == {"loss"}  # other plugins may add losses of their own
    builtin = {c["name"] for c in data["components"] if c["plugin"]["dist"] == "fmclf"}
    assert builtin == {"naive", "fused"}


def test_help_lists_the_run_options(runner):
    result = runner.invoke(cli, ["run", "--help"])
    for flag in ("--dataset", "--model", "--loss", "--updater", "--visualizer", "--device", "--epochs",
                 "--batch-size", "--lr", "--seed", "--data-root", "--out", "--config", "--resume", "-o"):
        assert flag in result.output


def test_loss_weights_are_checked_against_the_classes_before_training(runner, tiny_data, tmp_path):
    result = tiny_run(runner, tiny_data, tmp_path / "run", "-o", "loss.weight=1,2,3")
    assert result.exit_code == 2, result.output
    assert "has 3 entries but the data set has 10 classes" in result.output
    assert "epoch 1/" not in result.output
