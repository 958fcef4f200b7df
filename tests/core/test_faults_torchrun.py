"""torchrun's promises (issue 25, class 10): processes that end with different
weights fail the run (status failed, exit 1, saying so), and a resumed epoch is timed whole: the part
trained before the stop plus the part after, not the few batches left as if they were an epoch."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fmclf.cli import cli


def _differing(comm, module, device):
    return {"processes": 2, "weights_sha256": ["a" * 64, "b" * 64], "weights_identical": False}


def test_processes_that_end_with_different_weights_fail_the_run(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("fmclf.run.processes.weights_record", _differing)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--visualizer", "none",
                                      "--seed", "0", "--out", str(run_dir)])
    assert result.exit_code == 1, result.output
    assert "processes ended with different weights" in result.stderr and "the run is marked failed" in result.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "different weights" in status["reason"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["distributed"]["weights_identical"] is False  # the digests are kept for the report
    assert not (run_dir / "report.md").exists()  # no report of a finished run
    listed = CliRunner().invoke(cli, ["runs", "--json", str(tmp_path)])
    assert '"failed"' in listed.stdout


def test_fit_raises_for_processes_that_end_with_different_weights(tiny_data, tmp_path, monkeypatch):
    import fmclf
    from fmclf.errors import DistributedError

    monkeypatch.setattr("fmclf.run.processes.weights_record", _differing)
    with pytest.raises(DistributedError, match="different weights"):
        fmclf.fit(epochs=1, device="cpu", seed=0, visualizers=(), out=tmp_path / "run",
                  options={"dataset": {"data_root": str(tiny_data), "verify": False}})
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"


def test_a_resumed_epoch_is_timed_with_the_part_before_the_stop(tiny_data, tmp_path):
    import torch

    run_dir = tmp_path / "run"
    args = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "2", "--batch-size", "16",
            "--device", "cpu", "--seed", "0", "--out", str(run_dir)]
    stopped = CliRunner().invoke(cli, ["-p", "chaos_plugin", *args, "--visualizer", "signal-at",
                                       "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=3"])
    assert stopped.exit_code == 130, stopped.output
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["batch"]) == (1, 3)
    assert state["seconds"] > 0  # the three batches of epoch 2 trained so far
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--visualizer", "none"])
    assert resumed.exit_code == 0, resumed.output
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["seconds"] >= state["seconds"]  # both parts, not the three batches left alone


def test_an_old_checkpoint_without_seconds_still_resumes(tiny_data, tmp_path):
    import torch

    run_dir = tmp_path / "run"
    args = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "2", "--batch-size", "16",
            "--device", "cpu", "--seed", "0", "--out", str(run_dir)]
    CliRunner().invoke(cli, ["-p", "chaos_plugin", *args, "--visualizer", "signal-at",
                             "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=3"])
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del checkpoint["state"]["seconds"]
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--visualizer", "none"])
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.slow  # two processes under torchrun
def test_torchrun_processes_that_end_with_different_weights_fail_loudly(tmp_path):
    """Rank 1 moves its bias on its 2nd training step: the run must not be marked finished (issue 25)."""
    from test_distributed import TINY, torchrun

    from helpers import write_tiny_fashion

    tiny = write_tiny_fashion(tmp_path / "data")
    done = torchrun("-p", "distributed_plugin", "run", "--model", "scripted", "--epochs", "1", "--data-root",
                    str(tiny), *TINY, "--out", "drift", cwd=tmp_path, env={"FMCLF_TEST_CUE": "1:2:drift"})
    assert done.returncode == 1, done.stdout + done.stderr
    # fmclf's own words (torchrun's launcher adds its report of a failed child after them)
    assert "Error: the 2 processes ended with different weights" in done.stderr, done.stderr
    assert "fmclf/run/runner.py" not in done.stderr  # no traceback through fmclf
    assert "Stopped by SIGTERM" not in done.stderr and "after training had finished" not in done.stderr
    status = json.loads((tmp_path / "drift" / "status.json").read_text())
    assert status["status"] == "failed"
    assert json.loads((tmp_path / "drift" / "summary.json").read_text())["distributed"]["weights_identical"] is False
