"""fmclf compare end to end on the tiny data: the grid's run folders, the statistics in
compare.json against the runs' own metrics, continuation, failed cells, Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.compare.comparison import threads_per_run

from helpers import run_fmclf
from picture_checks import assert_picture

TESTS = pathlib.Path(__file__).parents[1]  # where the chaos plugin lives


def tiny(data: pathlib.Path, epochs: int = 2) -> list[str]:
    """Six batches an epoch of the tiny IDX files, on the CPU."""
    return ["--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16", "--device", "cpu",
            "--epochs", str(epochs)]


def compare(*args: str, plugins: tuple[str, ...] = ()):
    flags = [a for p in plugins for a in ("-p", p)]
    return CliRunner().invoke(cli, [*flags, "compare", *args], catch_exceptions=False)


def final_rows(out: pathlib.Path) -> dict[str, dict]:
    """Each run folder's last metrics row, by folder name."""
    return {d.name: json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])
            for d in sorted((out / "runs").iterdir())}


def stamps(out: pathlib.Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}


@pytest.mark.slow  # eight subprocesses, each starting torch and drawing its report: 1.5-3 minutes on 2 busy cores
def test_a_grid_of_eight_runs_with_two_jobs_then_the_same_command_trains_nothing(tiny_data, tmp_path):
    """The issue's acceptance run: 2 losses x 2 models x 2 seeds, two runs at a time."""
    out = tmp_path / "cmp"
    args = ["compare", "--loss", "fused", "--loss", "naive", "--model", "scratch", "--model", "nn", "--seeds", "2",
            *tiny(tiny_data), "--jobs", "2", "--out", str(out)]
    first = run_fmclf(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = sorted(d.name for d in (out / "runs").iterdir())
    assert len(runs) == 8 and all((out / "runs" / r / f).is_file()
                                  for r in runs for f in ("summary.json", "model.pt", "report.md"))
    assert "scratch-naive-sgd-fashion-mnist-seed1" in runs
    for name in ("compare.json", "compare.md", "curves.png"):
        assert (out / name).is_file()
    assert_picture(out / "curves.png")

    doc = json.loads((out / "compare.json").read_text())
    assert doc["seeds"] == [0, 1] and doc["jobs"] == 2 and doc["complete"] and doc["axes"] == ["model", "loss"]
    assert len(doc["rows"]) == 4
    finals = final_rows(out)
    for row in doc["rows"]:
        assert row["seeds"] == [0, 1] and row["failed"] == 0
        for metric, s in row["metrics"].items():
            values = [finals[pathlib.Path(row["runs"][str(seed)]).name][metric] for seed in (0, 1)]
            assert s["values"] == values
            assert s["mean"] == pytest.approx(statistics.fmean(values), abs=1e-15)
            assert s["std"] == pytest.approx(statistics.stdev(values), abs=1e-15)
            assert s["ci95"] == pytest.approx(12.7062 * statistics.stdev(values) / math.sqrt(2), rel=1e-5, abs=1e-15)
        assert set(row["metrics"]) >= {"train_loss", "train_acc", "test_acc"}
        assert row["epoch_seconds"]["n"] == 2
    # the runs divide the cores between them, and say so in their settings
    threads = threads_per_run(2)
    assert all(f"threads = {threads}" in (out / "runs" / r / "config.toml").read_text() for r in runs)
    md = (out / "compare.md").read_text()
    assert md.count("| 2 of 2 |") == 4 and "| rank | model | loss | test_acc | vs best |" in md

    before = stamps(out)
    again = run_fmclf(*args)
    assert again.returncode == 0, again.stderr
    assert "8 runs in" in again.stdout and "(8 finished); nothing to train" in again.stdout
    assert stamps(out) == before  # not one file of a run folder was touched
    assert json.loads((out / "compare.json").read_text())["rows"] == doc["rows"]


@pytest.mark.slow  # three comparisons of subprocess runs
def test_continuing_adds_seeds_and_epochs_and_keeps_what_is_done(tiny_data, tmp_path):
    out = tmp_path / "grow"
    first = compare("--model", "nn", "--seeds", "1", *tiny(tiny_data, epochs=1), "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "1 runs in" in first.output and "(1 new)" in first.output
    epoch1 = final_rows(out)

    grown_args = ["--model", "nn", "--seeds", "2", *tiny(tiny_data, epochs=2), "--out", str(out)]
    grown = compare(*grown_args)
    assert grown.exit_code == 0, grown.output
    assert "2 runs in" in grown.output and "(1 to train further, 1 new)" in grown.output
    for name in epoch1:  # trained further from its checkpoint: epoch 1 kept as it was
        rows = [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and rows[0] == epoch1[name]
    doc = json.loads((out / "compare.json").read_text())
    assert doc["rows"][0]["seeds"] == [0, 1] and doc["epochs"] == 2

    again = compare(*grown_args)
    assert "(2 finished); nothing to train" in again.output

    other_lr = compare(*grown_args, "--lr", "0.5")
    assert other_lr.exit_code == 2
    assert "was trained with other settings than this command gives it: lr = 0.1 (this command: 0.5)" in other_lr.output
    assert "Traceback" not in other_lr.output

    # each run is an ordinary run folder: fmclf predict and fmclf run --resume work on it
    run_dir = out / "runs" / "nn-fused-sgd-fashion-mnist-seed1"
    predicted = CliRunner().invoke(cli, ["predict", str(run_dir), "-n", "4", "--out", str(tmp_path / "p.png")])
    assert predicted.exit_code == 0, predicted.output
    further = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--epochs", "3"])
    assert further.exit_code == 0 and "resuming" in further.output


@pytest.mark.slow  # six subprocess runs, twice
def test_a_diverging_cell_is_recorded_and_not_retrained(tiny_data, tmp_path):
    """The naive loss at a large lr on raw pixels diverges on every seed; the comparison goes on."""
    out = tmp_path / "lr3"
    args = ["--loss", "naive", "--loss", "fused", "--lr", "3", "-o", "dataset.raw_pixels=true", "--seeds", "3",
            *tiny(tiny_data, epochs=1), "--out", str(out)]
    first = compare(*args)
    assert first.exit_code == 1, first.output  # the results are written, but the grid has holes
    assert first.output.count(": diverged (exit 1): training diverged: the loss became") == 3
    assert "3 run(s) of this comparison failed: scratch-naive-sgd-fashion-mnist-seed0: training diverged" \
        in first.output and "--retry-failed` trains the failed runs again" in first.output
    md = (out / "compare.md").read_text()
    assert "diverged in 3 of 3 seeds" in md
    assert "`runs/scratch-naive-sgd-fashion-mnist-seed2`: training diverged: the loss became" in md
    doc = json.loads((out / "compare.json").read_text())
    naive = next(r for r in doc["rows"] if r["components"]["loss"] == "naive")
    fused = next(r for r in doc["rows"] if r["components"]["loss"] == "fused")
    assert naive["failed"] == 3 and naive["metrics"] == {} and naive["seeds"] == [] and naive["rank"] == 2
    assert all(f["diverged"] and f["reason"].startswith("training diverged: the loss became")
               for f in naive["failures"])
    assert "\n" not in naive["failures"][0]["reason"]
    assert fused["failed"] == 0 and fused["seeds"] == [0, 1, 2] and fused["rank"] == 1

    logs = {p.name: p.read_text() for p in (out / "jobs").glob("*.log")}
    again = compare(*args)
    assert again.exit_code == 1 and "(3 finished, 3 failed); nothing to train" in again.output
    assert {p.name: p.read_text() for p in (out / "jobs").glob("*.log")} == logs
    assert "diverged in 3 of 3 seeds" in (out / "compare.md").read_text()

    retried = compare(*args, "--retry-failed")
    assert retried.exit_code == 1 and "(3 finished, 3 to resume)" in retried.output
    assert retried.output.count(": diverged (exit 1)") == 3  # the same seeds diverge the same way


def test_a_failing_component_is_a_failed_run_with_its_reason(tiny_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "boom"
    result = compare("--loss", "fused", "--loss", "boom", "--seeds", "1", *tiny(tiny_data, epochs=1), "--out", str(out),
                     plugins=("chaos_plugin",))
    assert result.exit_code == 1, result.output
    assert "Error: 1 run(s) of this comparison failed: scratch-boom-sgd-fashion-mnist-seed0: " in result.output
    assert "Traceback" not in result.output
    md = (out / "compare.md").read_text()
    assert "failed in 1 of 1 seeds" in md and "division by zero in the loss" in md
    row = next(r for r in json.loads((out / "compare.json").read_text())["rows"] if r["components"]["loss"] == "boom")
    assert row["failures"][0]["diverged"] is False and "boom" in row["failures"][0]["reason"]


def test_bad_input_is_refused_before_any_run(tiny_data, tmp_path):
    out = tmp_path / "bad"
    unknown = compare("--loss", "fused", "--loss", "fsued", *tiny(tiny_data), "--out", str(out))
    assert unknown.exit_code == 2 and "unknown loss 'fsued' — did you mean 'fused'?" in unknown.output
    typo = compare("--loss", "fused", "-o", "loss.smoothing=0", "-o", "loss.smoothing=0.1", *tiny(tiny_data),
                   "--out", str(out))
    assert typo.exit_code == 2 and "no loss of this comparison has option 'smoothing'" in typo.output
    bad_value = compare("--loss", "fused", "-o", "loss.label_smoothing=lots", *tiny(tiny_data), "--out", str(out))
    assert bad_value.exit_code == 2 and "bad value for option 'label_smoothing'" in bad_value.output
    for flags, text in ((["--seeds", "0"], "--seeds must be at least 1"),
                        (["--jobs", "0"], "--jobs must be at least 1")):
        result = compare(*flags, *tiny(tiny_data), "--out", str(out))
        assert result.exit_code == 2 and text in result.output
    assert not out.exists()  # nothing was created
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    busy = compare(*tiny(tiny_data), "--out", str(tmp_path / "busy"))
    assert busy.exit_code == 2 and "already holds other files" in busy.output


@pytest.mark.slow  # a grid of subprocess runs
def test_an_option_grid_runs_only_where_the_option_exists(tiny_data, tmp_path):
    out = tmp_path / "smooth"
    result = compare("--loss", "naive", "--loss", "fused", "-o", "loss.label_smoothing=0",
                     "-o", "loss.label_smoothing=0.3", "--seeds", "1", *tiny(tiny_data, epochs=1), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(d.name for d in (out / "runs").iterdir()) == [
        "scratch-fused-sgd-fashion-mnist-label_smoothing=0-seed0",
        "scratch-fused-sgd-fashion-mnist-label_smoothing=0.3-seed0",
        "scratch-naive-sgd-fashion-mnist-seed0"]
    assert "label_smoothing = 0.3" in (out / "runs" / "scratch-fused-sgd-fashion-mnist-label_smoothing=0.3-seed0"
                                       / "config.toml").read_text()
    doc = json.loads((out / "compare.json").read_text())
    assert doc["axes"] == ["loss", "loss.label_smoothing"]
    assert "| loss | loss.label_smoothing |" in (out / "compare.md").read_text()


@pytest.mark.slow  # signals processes, then continues
def test_ctrl_c_stops_every_job_with_its_checkpoint_and_the_same_command_continues(tiny_data, tmp_path):
    """SIGINT to `fmclf compare --jobs 2` while both runs are inside epoch 1: each run
    checkpoints and exits 130, compare exits 130 with the advice; the same command finishes."""
    out = tmp_path / "ctrl-c"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "fmclf"]),
           "-p", "chaos_plugin", "compare", "--model", "scratch", "--model", "nn", "--seeds", "1",
           *tiny(tiny_data, epochs=2), "--jobs", "2", "--out", str(out), "--visualizer", "pause-at",
           "-o", "visualizer.pause-at.epoch=1", "-o", "visualizer.pause-at.batch=3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    logs = [out / "jobs" / f"{m}-fused-sgd-fashion-mnist-seed0.log" for m in ("scratch", "nn")]
    deadline = time.monotonic() + 240
    while not all(p.exists() and "PAUSED" in p.read_text() for p in logs):  # both runs wait after batch 3 of epoch 1
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout + stderr
    assert "SIGINT: stopping the running jobs after their current batch" in stderr
    assert "Run the same command again to continue" in stderr and "Traceback" not in stderr
    assert stdout.count("stopped (interrupted, checkpoint written)") == 2
    import torch

    for model in ("scratch", "nn"):
        run = out / "runs" / f"{model}-fused-sgd-fashion-mnist-seed0"
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]
        assert (state["epoch"], state["batch"]) == (0, 3)
        assert not (run / "model.pt").exists()
    assert json.loads((out / "compare.json").read_text())["complete"] is False

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(2 to resume)" in again.stdout
    for model in ("scratch", "nn"):
        run = out / "runs" / f"{model}-fused-sgd-fashion-mnist-seed0"
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2 and (run / "model.pt").exists()
        assert "resuming" in (out / "jobs" / f"{model}-fused-sgd-fashion-mnist-seed0.log").read_text()
    assert json.loads((out / "compare.json").read_text())["complete"] is True


@pytest.mark.slow  # a signal at a moment it waits for, then continues
def test_ctrl_c_with_one_job_in_this_process_stops_with_the_checkpoint(tiny_data, tmp_path, monkeypatch):
    """--jobs 1 trains in the compare process: Ctrl-C reaches the run in flight, which checkpoints;
    no further run starts; the same command resumes it."""
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "one"
    args = ["--model", "scratch", "--model", "nn", "--seeds", "1", *tiny(tiny_data, epochs=2), "--out", str(out),
            "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=1", "-o", "visualizer.signal-at.batch=2"]
    stopped = compare(*args, plugins=("chaos_plugin",))
    assert stopped.exit_code == 130, stopped.output
    assert "1 job(s) were not started" in stopped.output and "Run the same command again to continue" in stopped.output
    import torch

    state = torch.load(out / "runs" / "scratch-fused-sgd-fashion-mnist-seed0" / "checkpoint.pt",
                       weights_only=True)["state"]
    assert (state["epoch"], state["batch"]) == (0, 2)
    assert not (out / "runs" / "nn-fused-sgd-fashion-mnist-seed0").exists()
    doc = json.loads((out / "compare.json").read_text())
    assert doc["complete"] is False and all(row["missing"] == [0] for row in doc["rows"])
    assert "**Incomplete**: 2 run(s) not trained yet" in (out / "compare.md").read_text()

    resumed = compare(*args, plugins=("chaos_plugin",))  # the resumed run is past its signal; the new one stops
    assert resumed.exit_code == 130 and "(1 to resume, 1 new)" in resumed.output
    finished = compare(*args, plugins=("chaos_plugin",))
    assert finished.exit_code == 0 and "(1 finished, 1 to resume)" in finished.output
    assert json.loads((out / "compare.json").read_text())["complete"] is True
