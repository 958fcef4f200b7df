"""The example plugin's own tests, written with fmclf's author kit.

``fmclf.testing`` holds the contract checks; the ``fmclf_plugin`` fixture
comes with fmclf (a pytest11 entry point), so no conftest is needed.
"""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

import fmclf
import fmclf_example
from fmclf.cli import cli
from fmclf.errors import OptionError
from fmclf.testing import (
    check_callback,
    check_import_is_light,
    check_metric,
    check_model,
    check_plugin,
    check_updater,
    check_visualizer,
)


def test_every_component_keeps_its_contract():
    records = check_plugin(fmclf_example)
    assert {(r.kind, r.name) for r in records} == {("model", "mlp"), ("updater", "adam"), ("visualizer", "history-csv"),
                                                   ("metric", "top-k"), ("callback", "target")}


def test_importing_the_plugin_does_not_import_torch():
    check_import_is_light("fmclf_example")


def test_mlp_hidden_option_sets_the_hidden_layer(fmclf_plugin):
    fmclf_plugin(fmclf_example)
    net = check_model("mlp", options={"hidden": "16", "dropout": "0.5"})  # strings, parsed as -o would
    assert [m.out_features for m in net if hasattr(m, "out_features")] == [16, 10]


def test_adam_with_options_trains():
    check_updater(fmclf_example.adam, options={"betas": "0.8,0.9", "weight_decay": 0.01})


def test_bad_options_are_refused_with_a_reason():
    with pytest.raises(OptionError, match="dropout"):
        check_model(fmclf_example.mlp, options={"dropout": 1.5})
    with pytest.raises(OptionError, match="expected 2 values"):
        check_updater(fmclf_example.adam, options={"betas": "0.9"})


def test_csv_rewrites_the_whole_history_every_epoch(tmp_path):
    check_visualizer(fmclf_example.csv_metrics, run_dir=tmp_path, options={"per_class": False})
    with open(tmp_path / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # two epochs, then a resumed third: one row each, in order, no duplicates
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # every numeric key of metrics.jsonl: the kit's run has a validation split
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "test_loss", "test_acc",
                            "lr", "seconds"}


def test_csv_refuses_to_overwrite_fmclfs_own_files(tmp_path):
    with pytest.raises(OptionError, match="fmclf writes that file itself"):
        fmclf_example.csv_metrics(run_dir=tmp_path, filename="metrics.jsonl")


def test_the_cli_lists_the_registered_plugin(fmclf_plugin):
    fmclf_plugin(fmclf_example)
    assert fmclf.get_component("updater", "adam").factory is fmclf_example.adam
    result = CliRunner().invoke(cli, ["plugins", "--json", "--kind", "model"])
    assert result.exit_code == 0, result.output
    mlp = next(c for c in json.loads(result.output)["components"] if c["name"] == "mlp")
    assert [(o["name"], o["type"], o["default"]) for o in mlp["options"]] == [("hidden", "int", 256),
                                                                              ("dropout", "float", 0.0)]


def test_top_k_counts_the_class_among_the_k_largest_logits():
    import torch

    metric = check_metric(fmclf_example.top_k, options={"k": "2"})
    metric.reset()
    metric.update(torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [2.0, 3.0, 1.0]]), torch.tensor([1, 0, 2]))
    assert metric.compute() == 1 / 3  # only the first example's class is in its top 2
    with pytest.raises(OptionError, match="from 1 to the 10 classes"):
        check_metric(fmclf_example.top_k, options={"k": 11})


def test_target_stops_the_run_once_good_enough_and_keeps_its_streak():
    callback = check_callback(fmclf_example.target, options={"monitor": "test_acc", "value": 0.0, "times": 2})
    assert callback.streak >= 2  # every epoch scored at least 0, so the run stopped after its second
    fresh = fmclf_example.target(monitor="test_acc", value=0.0)
    fresh.load_state_dict(callback.state_dict())
    assert fresh.streak == callback.streak

