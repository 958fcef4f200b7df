"""Callbacks that steer: early stopping ends a run cleanly, is saved in the checkpoint, and an
interrupted and resumed run stops where the uninterrupted one stops; every listener hears
of Ctrl-C, divergence and faults (on_exception)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli

from helpers import run_fmclf

TESTS = pathlib.Path(__file__).parents[1]
TIMING = {"seconds", "peak_memory"}
#: early stopping that fires for sure on tiny data: an improvement must be worth 10 nats, so epoch 1 stays the best
EARLY = ["--callback", "early-stop", "-o", "callback.early-stop.monitor=valid_loss", "-o", "dataset.valid=0.25",
         "--metric", "ece", "-o", "callback.early-stop.patience=2", "-o", "callback.early-stop.min_delta=10"]


def common(data: pathlib.Path, epochs: int = 6) -> list[str]:
    """Six batches of 16 an epoch (five with -o dataset.valid=0.25, which holds 20 of the 96 out), a fixed seed."""
    return ["run", "--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16",
            "--epochs", str(epochs), "--seed", "7", "--device", "cpu", "--lr", "0.3"]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["-p", "chaos_plugin", *args], catch_exceptions=False)


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summary(run_dir: pathlib.Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def weights(run_dir: pathlib.Path) -> dict:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)


@pytest.fixture
def stopped_early(tiny_data, tmp_path) -> pathlib.Path:
    out = tmp_path / "reference"
    result = invoke(*common(tiny_data), *EARLY, "--visualizer", "none", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_early_stopping_ends_the_run_cleanly_and_says_who_and_why(stopped_early):
    out = stopped_early
    history = rows(out)
    assert [r["epoch"] for r in history] == [1, 2, 3]  # best at 1, no improvement at 2 and 3: patience 2
    for row in history:  # valid and test metrics, and ece, every epoch
        assert {"valid_loss", "valid_acc", "valid_ece", "test_loss", "test_acc", "test_ece", "lr"} <= set(row)
    s = summary(out)
    assert s["stopped"]["by"] == "callback 'early-stop' (fmclf 0.1.0)" and s["stopped"]["epoch"] == 3
    assert "valid_loss has not improved by more than 10 on" in s["stopped"]["reason"]
    assert s["epochs"] == 6 and s["epochs_trained"] == 3 and s["test_ece"] == history[-1]["test_ece"]
    assert (out / "model.pt").exists()
    report = (out / "report.md").read_text()
    assert "Stopped after epoch 3 of 6 by callback 'early-stop' (fmclf 0.1.0): valid_loss has not improved" in report
    assert ("| valid |" in report and "ece" in report
            and "![Every metric and the learning rate, per epoch](metrics.png)" in report)


def test_the_printed_summary_says_who_stopped_the_run(tiny_data, tmp_path):
    result = invoke(*common(tiny_data), *EARLY, "--visualizer", "none", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "done: 3 epoch(s)" in result.output
    assert "stopped after epoch 3 by callback 'early-stop' (fmclf 0.1.0): valid_loss has not improved" in result.output
    assert "metrics: valid_ece " in result.output and "test_ece " in result.output


def test_ctrl_c_then_resume_stops_where_the_uninterrupted_run_stops(tiny_data, tmp_path, stopped_early):
    """SIGINT from another process in the middle of epoch 2; --resume restores early-stop's
    count (one epoch without improvement), so the run stops after epoch 3 as the reference did,
    with the same metrics and weights bit for bit."""
    run_dir = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    proc = subprocess.Popen(
        [str(exe), "-p", "chaos_plugin", *common(tiny_data), *EARLY, "--out", str(run_dir), "--visualizer", "pause-at",
         "-o", "visualizer.pause-at.epoch=2", "-o", "visualizer.pause-at.batch=3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == "PAUSED":
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, ("".join(seen) + out, err)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert (checkpoint["state"]["epoch"], checkpoint["state"]["batch"]) == (1, 3)
    assert checkpoint["callbacks"]["callback.early-stop"]["wait"] == 0  # epoch 1 was the best so far

    resumed = run_fmclf("-p", "chaos_plugin", "run", "--resume", str(run_dir), "--visualizer", "none", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "stopped after epoch 3 by callback 'early-stop'" in resumed.stdout
    assert rows(run_dir) == rows(stopped_early)
    assert summary(run_dir)["stopped"] == summary(stopped_early)["stopped"]
    a, b = weights(run_dir), weights(stopped_early)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resuming_after_an_epoch_keeps_the_callbacks_count(tiny_data, tmp_path, stopped_early):
    """SIGTERM at the end of epoch 2: without early-stop's saved count the resumed run would take
    epoch 3 for a new best and train on; with it, it stops after epoch 3."""
    run_dir = tmp_path / "run"
    result = invoke(*common(tiny_data), *EARLY, "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2",
                    "-o", "visualizer.signal-at.batch=0", "-o", "visualizer.signal-at.signal_name=SIGTERM",
                    "--out", str(run_dir))
    assert result.exit_code == 130, result.output
    resumed = invoke("run", "--resume", str(run_dir), "--visualizer", "none")
    assert resumed.exit_code == 0, resumed.output
    assert rows(run_dir) == rows(stopped_early)


def test_a_stopped_run_resumes_only_when_asked_to_train_further(stopped_early):
    again = invoke("run", "--resume", str(stopped_early))
    assert again.exit_code == 0, again.output
    assert "stopped after epoch 3 of 6 by callback 'early-stop' (fmclf 0.1.0)" in again.output
    assert "pass --epochs N to train further anyway" in again.output
    assert len(rows(stopped_early)) == 3
    further = invoke("run", "--resume", str(stopped_early), "--epochs", "7")
    assert further.exit_code == 0, further.output
    # the count was kept: two epochs without improvement already, so the next one stops it again
    assert [r["epoch"] for r in rows(stopped_early)] == [1, 2, 3, 4]
    assert summary(stopped_early)["stopped"]["epoch"] == 4


def test_monitoring_a_valid_metric_without_a_validation_split_is_refused_before_training(tiny_data, tmp_path):
    result = invoke(*common(tiny_data), "--callback", "early-stop", "--visualizer", "none",
                    "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "monitors 'valid_loss', but this data set has no validation split" in result.output
    assert "-o dataset.valid=0.1" in result.output and "epoch 1/" not in result.output


def test_monitoring_a_test_metric_beside_a_validation_split_is_a_warning(tiny_data, tmp_path):
    result = invoke(*common(tiny_data, epochs=1), "--callback", "early-stop",
                    "-o", "callback.early-stop.monitor=test_acc", "-o", "dataset.valid=0.25", "--visualizer", "none",
                    "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert ("Warning: callback 'early-stop' (fmclf 0.1.0): it monitors 'test_acc' although the run has a "
            "validation split") in result.stderr


def test_an_unknown_monitor_names_what_the_run_records(tiny_data, tmp_path):
    result = invoke(*common(tiny_data), "--callback", "best", "-o", "callback.best.monitor=test_los",
                    "-o", "callback.best.mode=min", "--visualizer", "none", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "monitors 'test_los', which this run does not record. Did you mean 'test_loss'?" in result.output
    assert "train_loss, train_acc, test_loss, test_acc" in result.output


def test_a_visualizer_may_not_stop_a_run(tiny_data, tmp_path):
    result = invoke(*common(tiny_data), "--visualizer", "stop-now", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert "visualizer 'stop-now'" in result.output and "a visualizer shows and does not steer" in result.output


def test_best_keeps_the_best_epochs_weights_and_predict_uses_them(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = invoke(*common(tiny_data, epochs=3), "--callback", "best", "-o", "callback.best.monitor=valid_loss",
                    "-o", "dataset.valid=0.25", "--lr", "5", "--visualizer", "none", "--out", str(out))
    assert result.exit_code == 0, result.output
    history = rows(out)
    best_epoch = min(history, key=lambda r: r["valid_loss"])["epoch"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best.keys() == weights(out).keys()
    if best_epoch == 3:
        assert all(torch.equal(best[k], weights(out)[k]) for k in best)
    predicted = invoke("predict", str(out), "--weights", "best", "--data-root", str(tiny_data), "-n", "6")
    assert predicted.exit_code == 0, predicted.output
    assert f"weights from {out / 'best.pt'}" in predicted.output
    missing = invoke("predict", str(out), "--weights", "nope", "--data-root", str(tiny_data))
    assert missing.exit_code == 1 and "holds no nope.pt" in missing.output and "final, best" in missing.output


# --- on_exception -------------------------------------------------------------------------


RECORD = ["--callback", "record", "-o", "callback.record.name=cb", "--visualizer", "record",
          "-o", "visualizer.record.name=vis"]


def events(run_dir: pathlib.Path, name: str) -> list[str]:
    return (run_dir / f"{name}.events").read_text().splitlines()


@pytest.mark.parametrize(("extra", "expected", "code"), [
    (["--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=3"],
     "exception interrupt 2 3 Interrupted", 130),
    (["--loss", "inf-at", "-o", "loss.at_call=9"], "exception divergence 2 3 DivergenceError", 1),
    (["--model", "boom-forward", "-o", "model.at_call=13"], "exception fault 2 4 ComponentError", 1),
], ids=["ctrl-c", "divergence", "fault"])
def test_every_callback_and_visualizer_hears_what_stopped_the_run(tiny_data, tmp_path, extra, expected, code):
    """Six training batches an epoch: training loss call 9 is batch 3 of epoch 2; the test set's 40 examples
    are 3 more forward calls an epoch, so forward call 13 is batch 4 of epoch 2."""
    run_dir = tmp_path / "run"
    result = invoke(*common(tiny_data, epochs=3), *RECORD, *extra, "--out", str(run_dir))
    assert result.exit_code == code, result.output
    for name in ("cb", "vis"):
        seen = events(run_dir, name)
        assert seen[0] == "fit_start 1 test" and seen[1] == "epoch_end 1 stopping=False", seen
        assert seen[-1] == expected, seen
        assert "fit_end" not in seen


def test_a_listener_that_fails_in_on_exception_does_not_hide_the_error(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    result = invoke(*common(tiny_data, epochs=3), "--callback", "boom-on-exception", *RECORD,
                    "--loss", "inf-at", "-o", "loss.at_call=2", "--out", str(run_dir))
    assert result.exit_code == 1, result.output
    assert ("Warning: callback 'boom-on-exception' (plugin 'chaos_plugin') raised RuntimeError in on_exception: "
            "the log file is gone too") in result.stderr
    assert "Error: training diverged: the loss became inf on batch 2" in result.stderr
    assert events(run_dir, "cb")[-1] == events(run_dir, "vis")[-1] == "exception divergence 1 2 DivergenceError"
