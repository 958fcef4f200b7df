"""Ctrl-C / SIGTERM during training, then --resume: nothing lost, and on CPU the
resumed run ends bit for bit where an uninterrupted run ends."""

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

TESTS = pathlib.Path(__file__).parents[1]  # where the helper plugins live
# The only fields allowed to differ between two runs of the same seed: measurements of the
# machine, not of the run. (peak_memory is the process's peak RSS; CliRunner runs share one
# process, so it depends on which tests ran before.)
TIMING = {"seconds", "peak_memory"}


def common(data: pathlib.Path, epochs: int = 3) -> list[str]:
    """Six batches an epoch (96 examples of 16), a fixed seed, the CPU."""
    return ["run", "--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16",
            "--epochs", str(epochs), "--seed", "7", "--device", "cpu", "--lr", "0.3"]


def cli_run(*args: str):
    return CliRunner().invoke(cli, ["-p", "chaos_plugin", *args], catch_exceptions=False)


def load(path: pathlib.Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(got: pathlib.Path, want: pathlib.Path) -> None:
    """Same final weights, checkpoint and metrics (timings aside)."""
    for name in ("model.pt",):
        a, b = load(got / name), load(want / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"
    ca, cb = load(got / "checkpoint.pt"), load(want / "checkpoint.pt")
    for key in cb["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key])
    assert ca["updater"] == cb["updater"]
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    assert rows(got) == rows(want)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (got, want))
    assert {k: v for k, v in sa.items() if k not in TIMING} == {k: v for k, v in sb.items() if k not in TIMING}


@pytest.fixture
def reference(tiny_data, tmp_path) -> pathlib.Path:
    """The same run, never interrupted."""
    out = tmp_path / "reference"
    result = cli_run(*common(tiny_data), "--model", "linear", "--visualizer", "none", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(rows(out)) == 3
    return out


def test_sigint_from_another_process_mid_epoch_then_resume_is_bit_for_bit(tiny_data, tmp_path):
    """The real thing: a subprocess gets SIGINT (as Ctrl-C sends it) in the middle of
    epoch 2, checkpoints, says how to resume and exits 130; --resume finishes the run."""
    run_dir, ref_dir = tmp_path / "interrupted", tmp_path / "reference"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    # the reference trains alongside, in its own process, as a user would run it
    ref = subprocess.Popen([str(exe), *common(tiny_data), "--visualizer", "none", "--out", str(ref_dir)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    proc = subprocess.Popen(
        [str(exe), "-p", "chaos_plugin", *common(tiny_data), "--out", str(run_dir), "--visualizer", "pause-at",
         "-o", "visualizer.pause-at.epoch=2", "-o", "visualizer.pause-at.batch=3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    seen = []
    for line in proc.stdout:  # the plugin prints PAUSED after batch 3 of epoch 2 and waits
        seen.append(line)
        if line.strip() == "PAUSED":
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    out = "".join(seen) + out
    assert "PAUSED" in out, (out, err)
    assert proc.returncode == 130, (out, err)
    assert "SIGINT: stopping after this batch" in err
    assert "Stopped by SIGINT after batch 3 of epoch 2; checkpoint written to " in err
    assert f"Resume with: fmclf run --resume {run_dir}" in err
    assert "Traceback" not in err

    checkpoint = load(run_dir / "checkpoint.pt")
    assert checkpoint["state"]["epoch"] == 1 and checkpoint["state"]["batch"] == 3
    assert checkpoint["state"]["examples"] == 48
    assert len(rows(run_dir)) == 1  # epoch 1's metrics are kept
    assert not (run_dir / "model.pt").exists()

    resumed = run_fmclf("run", "--resume", str(run_dir), "--visualizer", "none", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir} at epoch 2 of 3, batch 4 of 6" in resumed.stdout  # batch of the epoch's 6
    assert "epoch 1/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout

    ref_out, ref_err = ref.communicate(timeout=120)
    assert ref.returncode == 0, ref_err
    assert_same_run(run_dir, ref_dir)


def test_sigterm_during_evaluation_checkpoints_the_whole_epoch(tiny_data, tmp_path, reference):
    """SIGTERM while the test set is evaluated after epoch 2: the epoch still counts."""
    run_dir = tmp_path / "run"
    result = cli_run(*common(tiny_data), "--model", "linear", "-o", "model.signal_at_eval=2", "--visualizer", "none",
                     "--out", str(run_dir))
    assert result.exit_code == 130, result.output
    assert "Stopped by SIGTERM after epoch 2" in result.stderr
    assert f"Resume with: fmclf run --resume {run_dir}" in result.stderr
    assert load(run_dir / "checkpoint.pt")["state"]["epoch"] == 2
    assert len(rows(run_dir)) == 2

    resumed = cli_run("run", "--resume", str(run_dir))
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output and "at epoch 3 of 3" in resumed.output
    # resuming restored the option, so the model would signal again at its 2nd evaluation
    # of this process; it evaluates once, so it does not
    assert_same_run(run_dir, reference)


def test_sigterm_between_epochs(tiny_data, tmp_path, reference):
    run_dir = tmp_path / "run"
    result = cli_run(*common(tiny_data), "--model", "linear", "--visualizer", "signal-at",
                     "-o", "visualizer.signal-at.epoch=1", "-o", "visualizer.signal-at.batch=0",
                     "-o", "visualizer.signal-at.signal_name=SIGTERM", "--out", str(run_dir))
    assert result.exit_code == 130, result.output
    assert "Stopped by SIGTERM after epoch 1" in result.stderr
    assert load(run_dir / "checkpoint.pt")["state"]["epoch"] == 1
    resumed = cli_run("run", "--resume", str(run_dir), "--visualizer", "none")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(run_dir, reference)


def test_a_signal_during_the_last_evaluation_lets_the_run_finish(tiny_data, tmp_path, reference):
    """Nothing is left to stop: the run writes its weights and summary and exits 0."""
    run_dir = tmp_path / "run"
    result = cli_run(*common(tiny_data), "--model", "linear", "-o", "model.signal_at_eval=3", "--visualizer", "none",
                     "--out", str(run_dir))
    assert result.exit_code == 0, result.output
    assert (run_dir / "model.pt").exists() and (run_dir / "summary.json").exists()
    assert_same_run(run_dir, reference)


def test_second_sigint_stops_at_once_and_keeps_the_last_checkpoint(tiny_data, tmp_path, reference):
    run_dir = tmp_path / "run"
    result = cli_run(*common(tiny_data), "--model", "linear", "--visualizer", "signal-at",
                     "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=2",
                     "-o", "visualizer.signal-at.times=2", "--out", str(run_dir))
    assert result.exit_code == 130, result.output
    assert "Stopped at once by a second SIGINT" in result.stderr
    assert "keeps its last good checkpoint (after epoch 1)" in result.stderr
    assert f"Resume with: fmclf run --resume {run_dir}" in result.stderr
    checkpoint = load(run_dir / "checkpoint.pt")
    assert (checkpoint["state"]["epoch"], checkpoint["state"]["batch"]) == (1, 0)
    resumed = cli_run("run", "--resume", str(run_dir), "--visualizer", "none")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(run_dir, reference)


def test_resume_can_train_further_and_records_it(tiny_data, tmp_path, reference):
    """--epochs on --resume extends a finished run; the result equals a longer run's first epochs continued."""
    short = tmp_path / "short"
    assert cli_run(*common(tiny_data, epochs=2), "--model", "linear", "--visualizer", "none",
                   "--out", str(short)).exit_code == 0
    again = cli_run("run", "--resume", str(short))
    assert again.exit_code == 0 and "already trained 2 epoch(s) of 2" in again.output
    longer = cli_run("run", "--resume", str(short), "--epochs", "3")
    assert longer.exit_code == 0, longer.output
    assert_same_run(short, reference)
    assert "epochs = 3" in (short / "config.toml").read_text()
    assert "resumed = [" in (short / "config.toml").read_text()
