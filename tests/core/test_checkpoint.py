"""Checkpoints: written every epoch, atomically; loaded as tensors and plain data only;
every way one can be wrong is a clear error."""

from __future__ import annotations

import enum
import json
import os
import pathlib
import pickle

import pytest
import torch
from click.testing import CliRunner

from fmclf import atomic
from fmclf.cli import cli
from fmclf.errors import CheckpointError
from fmclf.run import checkpoint as checkpoints
from fmclf.run import folder as runs


def common(data: pathlib.Path, *more: str) -> list[str]:
    return ["run", "--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "32",
            "--seed", "5", "--device", "cpu", "--visualizer", "none", *more]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def finished(tiny_data, tmp_path) -> pathlib.Path:
    run_dir = tmp_path / "finished"
    assert invoke(*common(tiny_data, "--epochs", "2", "--out", str(run_dir))).exit_code == 0
    return run_dir


# --- atomic writes ------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic.write_bytes(path, b"old")

    def writer(fh):
        fh.write(b"half of the new")
        raise KeyboardInterrupt  # Ctrl-C in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic.write_with(path, writer)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_every_epoch_writes_a_checkpoint_and_the_metrics(tiny_data, tmp_path, monkeypatch):
    writes = []
    real_save, real_metrics = checkpoints.save_torch, runs.write_metrics
    monkeypatch.setattr(checkpoints, "save_torch",
                        lambda path, obj, *writer: (writes.append((path.name, obj.get("state", {}).get("epoch")
                                                                   if isinstance(obj, dict) else None)),
                                                    real_save(path, obj, *writer))[1])
    monkeypatch.setattr(runs, "write_metrics",
                        lambda d, history, *writer: (writes.append(("metrics.jsonl", len(history))),
                                                     real_metrics(d, history, *writer))[1])
    run_dir = tmp_path / "run"
    assert invoke(*common(tiny_data, "--epochs", "3", "--out", str(run_dir))).exit_code == 0
    assert writes == [("checkpoint.pt", 1), ("metrics.jsonl", 1), ("checkpoint.pt", 2), ("metrics.jsonl", 2),
                      ("checkpoint.pt", 3), ("metrics.jsonl", 3), ("model.pt", None)]


def test_the_checkpoint_holds_model_updater_rng_progress_and_metrics(finished):
    checkpoint = torch.load(finished / "checkpoint.pt", weights_only=True)
    assert checkpoint["format"] == checkpoints.FORMAT
    assert set(checkpoint) == {"format", "model", "updater", "scheduler", "callbacks", "rng", "state", "world_size"}
    assert checkpoint["world_size"] == 1
    assert checkpoint["updater"] == {"lr": 0.1}
    assert checkpoint["scheduler"] is None and checkpoint["callbacks"] == {}  # sgd has no schedule, the run no callback
    assert checkpoint["state"]["stopped"] is None
    assert isinstance(checkpoint["rng"]["torch"], torch.Tensor) and checkpoint["rng"]["python"][0] == 3
    assert checkpoint["state"]["epoch"] == 2
    assert checkpoint["state"]["history"] == [json.loads(line)
                                              for line in (finished / "metrics.jsonl").read_text().splitlines()]
    weights = torch.load(finished / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], checkpoint["model"][k]) for k in weights)


# --- what a user sees for a bad checkpoint ------------------------------------------------


def resume(run_dir: pathlib.Path, *more: str):
    return invoke("run", "--resume", str(run_dir), "--epochs", "3", *more)


def test_a_truncated_checkpoint(finished):
    path = finished / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:300])
    result = resume(finished)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: the checkpoint cannot be loaded (")
    assert "It is damaged or truncated, or was not written by fmclf" in result.stderr
    assert "Traceback" not in result.output


def test_random_bytes_as_a_checkpoint(finished):
    (finished / "checkpoint.pt").write_bytes(os.urandom(2000))
    result = resume(finished)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the checkpoint cannot be loaded (" in result.stderr and "It is damaged or truncated" in result.stderr


class _Payload:
    """What an attacker puts in a "checkpoint": unpickling it would run a command."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(finished, tmp_path, how):
    marker = tmp_path / "pwned"
    path = finished / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    evil = {**good, "state": {**good["state"], "extra": _Payload(marker)}}
    if how == "torch.save":
        torch.save(evil, path)
    else:  # torch.load also reads a bare pickle (its legacy format)
        path.write_bytes(pickle.dumps(evil, protocol=int(how[-1])))
    result = resume(finished)
    assert result.exit_code == 1, result.output
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert f"Error: {path}: the checkpoint cannot be loaded" in result.stderr and "Traceback" not in result.output
    if how != "pickle protocol 5":  # (protocol 5 fails earlier, on an opcode torch's safe unpickler lacks)
        assert "it holds Python objects other than tensors and plain data" in result.stderr
        assert "unpickling such objects can run arbitrary code, so fmclf refuses" in result.stderr
    if how == "torch.save":
        assert "posix.system" in result.stderr  # the object it refused
    with pytest.raises(CheckpointError):
        checkpoints.load_torch(path, "checkpoint")
    assert not marker.exists()


def test_a_checkpoint_from_a_different_model(finished, tiny_data, tmp_path):
    other = tmp_path / "other"
    assert invoke(*common(tiny_data, "--epochs", "1", "--model", "nn", "--out", str(other))).exit_code == 0
    (finished / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    result = resume(finished)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {finished / 'checkpoint.pt'} does not fit this run's components "
                                    f"(RuntimeError: ")
    assert "It comes from another run, or the plugins changed since it was written" in result.stderr


def test_a_file_that_is_not_an_fmclf_checkpoint(finished):
    torch.save({"weights": torch.zeros(3)}, finished / "checkpoint.pt")
    result = resume(finished)
    assert result.exit_code == 1
    assert "not an fmclf checkpoint (format None, expected 'fmclf-checkpoint/1')" in result.stderr


def test_a_deleted_checkpoint_with_metrics_left(finished):
    (finished / "checkpoint.pt").unlink()
    result = resume(finished)
    assert result.exit_code == 1
    assert "checkpoint.pt is missing, but metrics.jsonl records 2 finished epoch(s)" in result.stderr
    assert "fmclf run --config" in result.stderr


def test_a_run_stopped_before_its_first_checkpoint_starts_over(finished, tmp_path):
    """Nothing was trained, so there is nothing to lose: --resume trains from epoch 1."""
    for name in ("checkpoint.pt", "metrics.jsonl", "model.pt", "summary.json"):
        (finished / name).unlink()
    result = invoke("run", "--resume", str(finished))
    assert result.exit_code == 0, result.output
    assert "has no checkpoint (the run stopped before its first one), so training starts at epoch 1" in result.output
    assert "epoch 1/2" in result.output and (finished / "model.pt").exists()


def test_resume_needs_a_run_folder_and_keeps_its_settings(tmp_path, finished):
    result = invoke("run", "--resume", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "not a run folder (no config.toml)" in result.stderr
    result = invoke("run", "--resume", str(finished), "--batch-size", "8", "-o", "model.x=1")
    assert result.exit_code == 2
    assert "--batch-size, -o/--data-root cannot change them" in result.stderr
    # a setting is named by the flag the user typed: --callback, not the field's name
    result = invoke("run", "--resume", str(finished), "--callback", "early-stop", "--metric", "f1")
    assert result.exit_code == 2
    assert "--callback, --metric cannot change them" in result.stderr, result.stderr


def test_a_finished_run_missing_its_final_files_is_finished_on_resume(finished):
    """Stopped between the last checkpoint and model.pt: --resume writes what is missing."""
    weights = torch.load(finished / "model.pt", weights_only=True)
    summary = json.loads((finished / "summary.json").read_text())
    (finished / "model.pt").unlink()
    (finished / "summary.json").unlink()
    result = invoke("run", "--resume", str(finished))
    assert result.exit_code == 0, result.output
    assert f"finishing {finished}" in result.output
    again = torch.load(finished / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert json.loads((finished / "summary.json").read_text())["test_acc"] == summary["test_acc"]


class _Phase(enum.IntEnum):
    WARMUP = 1


@pytest.mark.parametrize("state, why", [({"f": lambda: 0}, "holding objects other than tensors"),
                                        ({"phase": _Phase.WARMUP}, "cannot be saved in a checkpoint and read back")])
def test_check_state_refuses_what_a_checkpoint_cannot_keep_naming_the_callback(state, why):
    from fmclf.errors import ComponentError

    checkpoints.check_state("callback 'mine'", {"step": 3, "best": torch.ones(2), "seen": [1, "a"]})
    with pytest.raises(ComponentError, match=f"^callback 'mine': .*{why}"):
        checkpoints.check_state("callback 'mine'", state)
