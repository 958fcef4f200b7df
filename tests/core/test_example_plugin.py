"""The example package under examples/fmclf-example, installed as any third-party
plugin is, and used by name through `fmclf run`.

CI installs it (README's test command); where it is not installed these tests
skip with the command that installs it, and fail when FMCLF_REQUIRE_DATA=1.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.testing import check_import_is_light

from helpers import run_fmclf

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "fmclf-example"


@pytest.fixture(scope="module")
def example() -> metadata.Distribution:
    """The installed fmclf-example distribution."""
    try:
        return metadata.distribution("fmclf-example")
    except metadata.PackageNotFoundError:
        why = f"the example plugin is not installed; install it with `pip install -e {EXAMPLE}`"
        if os.environ.get("FMCLF_REQUIRE_DATA") == "1":
            pytest.fail(f"FMCLF_REQUIRE_DATA=1 (as in CI) but {why}")
        pytest.skip(why)


def test_the_installed_example_is_this_repositorys_and_registers_through_the_entry_point(example):
    (ep,) = [ep for ep in example.entry_points if ep.group == "fmclf"]
    assert (ep.name, ep.value) == ("example", "fmclf_example")
    import fmclf_example

    assert pathlib.Path(fmclf_example.__file__).resolve().is_relative_to(EXAMPLE)  # not a stale copy
    check_import_is_light("fmclf_example")


def test_fmclf_run_trains_with_the_examples_mlp_adam_and_csv(example, tiny_data, tmp_path):
    out = tmp_path / "run"
    done = run_fmclf(
        "run", "--model", "mlp", "--updater", "adam", "--visualizer", "history-csv", "--lr", "0.01", "--epochs", "2",
        "--batch-size", "32", "--seed", "3", "-o", "model.hidden=32", "-o", "updater.betas=0.8,0.99",
        "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--out", str(out), timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training mlp + fused + adam" in done.stdout

    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["test_acc"]) for r in rows] == [h["test_acc"] for h in history]
    assert float(rows[1]["test_acc_trouser"]) == history[1]["per_class_test_acc"]["trouser"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])  # Adam is training the MLP

    config = tomllib.loads((out / "config.toml").read_text())
    assert config["options"]["model"] == {"hidden": 32, "dropout": 0.0}
    assert config["options"]["updater"]["betas"] == [0.8, 0.99]
    provenance = config["provenance"]
    assert provenance["plugins"]["example"] == f"fmclf-example {example.version} (fmclf_example)"
    assert provenance["components"]["model"] == f"fmclf-example:mlp {example.version}"
    assert provenance["components"]["visualizer.history-csv"] == f"fmclf-example:history-csv {example.version}"

    # the recorded config repeats the run through the same plugin, option values included
    again = tmp_path / "again"
    result = CliRunner().invoke(cli, ["run", "--config", str(out / "config.toml"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert (again / "history.csv").read_text().splitlines()[0] == (out / "history.csv").read_text().splitlines()[0]
    repeated = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert ([{k: v for k, v in h.items() if k != "seconds"} for h in repeated]
            == [{k: v for k, v in h.items() if k != "seconds"} for h in history])


def test_blocking_the_example_leaves_the_builtins_and_names_the_missing_model(example, tmp_path):
    result = CliRunner().invoke(cli, ["-p", "no:fmclf-example", "run", "--model", "mlp", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    # named as blocked, not as unknown, with the flag that blocks it and the models there are
    assert ("model 'mlp' comes from plugin 'example'" in result.stderr
            and "`-p no:fmclf-example` blocks" in result.stderr)
    assert "unknown" not in result.stderr and "scratch" in result.stderr


def test_the_examples_own_test_suite_passes_with_the_fixture_from_the_entry_point(example):
    # a fresh pytest, outside this suite's conftest: the fmclf_plugin fixture comes from fmclf's pytest11 entry point
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, cwd=EXAMPLE, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_the_examples_metric_and_callback_steer_a_run(example, tiny_data, tmp_path):
    """top-k recorded every epoch; target stops the run the first epoch it is good enough."""
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size", "16", "--epochs", "6",
        "--seed", "1", "--device", "cpu", "--visualizer", "none", "--out", str(out), "--metric", "top-k",
        "--callback", "target", "-o", "callback.target.monitor=test_top-k", "-o", "callback.target.value=0.5",
    ])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["test_top-k"] >= r["test_acc"] for r in rows)
    assert rows[-1]["test_top-k"] >= 0.5 > max([r["test_top-k"] for r in rows[:-1]], default=0)
    stopped = json.loads((out / "summary.json").read_text())["stopped"]
    assert stopped["by"] == "callback 'target' (fmclf-example 0.1.0)" and stopped["epoch"] == len(rows)


def test_the_example_readme_lists_every_component_it_registers(example):
    """The README's table: one row per registered component, with the right count in words."""
    import re

    from fmclf.host.loading import load_plugins

    host = load_plugins(autoload=False, include=["example"])
    registered = {(r.kind, r.name) for r in host.registry if r.plugin.dist == "fmclf-example"}
    text = (EXAMPLE / "README.md").read_text()
    listed = set(re.findall(r"^\| (\w+) \| `([\w-]+)` \|", text, flags=re.M))
    assert listed == registered
    words = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
    assert f"It adds {words[len(registered)]} components" in text
