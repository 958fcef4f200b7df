"""SIGINT, SIGTERM and SIGHUP at any moment end fmclf as documented: exit code 130, what was
kept and how to go on, never a death by signal, a traceback, half a file or an empty folder;
and a finished training whose pictures were cut short draws them on --resume."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from helpers import run_fmclf

pytestmark = pytest.mark.slow  # every test starts fmclf as a process and signals it at moments it waits for

TESTS = pathlib.Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
EXE = pathlib.Path(sys.executable).with_name("fmclf")
FMCLF = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "fmclf"]


def settings(data: pathlib.Path, *, epochs: int = 2) -> list[str]:
    return ["--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16", "--epochs", str(epochs),
            "--seed", "7", "--device", "cpu"]


def paused(args: list[str], *signals: int, gap: float = 0.0) -> tuple[int, str, str]:
    """Start fmclf, wait until the chaos plugin prints PAUSED, send ``signals``; (code, stdout, stderr)."""
    proc = subprocess.Popen([*FMCLF, "-p", "chaos_plugin", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == "PAUSED":
            for sig in signals:
                proc.send_signal(sig)
                time.sleep(gap)
            break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + out, err


def handling(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``proc`` catches SIGTERM: fmclf's first step. (Before it, the Python interpreter is
    still starting, and a signal does to it what it does to any program that has not started yet.)"""
    status = pathlib.Path(f"/proc/{proc.pid}/status")
    if not status.exists():
        pytest.skip("needs /proc to see when the process has started")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            caught = "SigCgt: 0"
        if int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    raise AssertionError("fmclf never installed its signal handler")


def leftovers(folder: pathlib.Path) -> list[str]:
    """Temporary files of atomic writes, and empty files: what a cut write would leave."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or (p.is_file() and p.name != ".lock"
                                                                             and p.stat().st_size == 0)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_while_the_data_loads_ends_with_130_and_leaves_no_folder(tiny_data, tmp_path, sig):
    out = tmp_path / "run"
    code, stdout, err = paused(["run", *settings(tiny_data), "--dataset", "pause-data", "--out", str(out)], sig)
    name = signal.Signals(sig).name
    assert code == 130, (code, stdout, err)
    assert f"Stopped by {name} before training started; nothing was written to {out}" in err, err
    assert "is removed again" in err
    assert "Traceback" not in err
    assert not out.exists()  # the folder it made for the run is gone again: the same --out works next time


def test_sighup_mid_epoch_checkpoints_like_sigterm_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = paused(["run", *settings(tiny_data), "--visualizer", "pause-at", "-o",
                                "visualizer.pause-at.epoch=2", "-o", "visualizer.pause-at.batch=3", "--out", str(out)],
                               signal.SIGHUP)
    assert code == 130, (stdout, err)
    assert "Stopped by SIGHUP after batch 3 of epoch 2; checkpoint written to" in err and "Traceback" not in err
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    resumed = run_fmclf("-p", "chaos_plugin", "run", "--resume", str(out), "--visualizer", "none", env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at epoch 2 of 2, batch 4 of 6" in resumed.stdout


def test_a_burst_of_signals_mid_epoch_still_checkpoints_once_and_cleanly(tiny_data, tmp_path):
    out = tmp_path / "run"
    burst = [signal.SIGTERM] * 15 + [signal.SIGHUP] * 5
    code, stdout, err = paused(["run", *settings(tiny_data), "--visualizer", "pause-at", "-o",
                                "visualizer.pause-at.epoch=2", "-o", "visualizer.pause-at.batch=2", "--out", str(out)],
                               *burst)
    assert code == 130, (stdout, err)
    assert "Stopped by SIGTERM after batch 2 of epoch 2; checkpoint written to" in err and "Traceback" not in err
    assert err.count("already stopping") <= 1
    assert leftovers(out) == []
    resumed = run_fmclf("-p", "chaos_plugin", "run", "--resume", str(out), "--visualizer", "none", env=ENV)
    assert resumed.returncode == 0, resumed.stderr


def test_a_double_ctrl_c_stops_at_once_with_130_not_a_death_by_sigint(tiny_data, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = paused(["run", *settings(tiny_data), "--visualizer", "pause-at", "-o",
                                "visualizer.pause-at.epoch=2", "-o", "visualizer.pause-at.batch=2", "--out", str(out)],
                               signal.SIGINT, signal.SIGINT, signal.SIGINT, signal.SIGINT, gap=0.05)
    assert code == 130, (code, stdout, err)
    assert "Traceback" not in err
    assert "Stopped at once by a second SIGINT" in err or "Stopped by SIGINT after batch 2 of epoch 2" in err, err
    assert leftovers(out) == []
    assert f"fmclf run --resume {out}" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_pictures_are_drawn_is_mended_by_resume(tiny_data, tmp_path, sig):
    """The test set is read once after each of the 2 epochs, then a third time for predictions.png."""
    out = tmp_path / "run"
    code, stdout, err = paused(["run", *settings(tiny_data), "--dataset", "pause-data", "-o", "dataset.pause=test:3",
                                "--visualizer", "none", "--out", str(out)], sig)
    name = signal.Signals(sig).name
    assert code == 130, (stdout, err)
    assert f"Stopped by {name} after training had finished" in err and "Traceback" not in err
    assert f"`fmclf run --resume {out}` draws the pictures and report.md" in err
    assert (out / "model.pt").exists() and (out / "summary.json").exists() and not (out / "report.md").exists()
    weights, summary = (out / "model.pt").read_bytes(), (out / "summary.json").read_text()
    assert leftovers(out) == []
    # --resume keeps the run's options; it reads the test set twice (an evaluation, the pictures): no pause
    resumed = run_fmclf("-p", "chaos_plugin", "run", "--resume", str(out), env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    out_text = resumed.stdout
    assert f"drawing the pictures and report.md of {out}, which a stop cut short" in out_text
    assert (out / "report.md").exists() and (out / "predictions.png").exists()
    assert (out / "model.pt").read_bytes() == weights and (out / "summary.json").read_text() == summary
    again = run_fmclf("-p", "chaos_plugin", "run", "--resume", str(out), env=ENV)
    assert again.returncode == 0 and "already trained 2 epoch(s) of 2" in again.stdout


def test_sigterm_while_predict_loads_the_data(tiny_data, tmp_path):
    out = tmp_path / "run"
    done = run_fmclf("run", *settings(tiny_data, epochs=1), "--visualizer", "none", "--out", str(out))
    assert done.returncode == 0, done.stderr
    before = (out / "predictions.png").read_bytes()
    config = (out / "config.toml").read_text().replace('dataset = "fmclf:fashion-mnist"', 'dataset = "pause-data"')
    config = config.replace('dataset = "fashion-mnist"', 'dataset = "pause-data"')
    config = "\n".join(line for line in config.splitlines()
                       if not line.startswith(("download", "resize", "raw_pixels", "valid")))
    (out / "config.toml").write_text(config + "\n")
    code, stdout, err = paused(["predict", str(out), "-n", "4"], signal.SIGTERM)
    assert code == 130, (stdout, err)
    assert err.strip().endswith("Stopped by SIGTERM.") and "Traceback" not in err
    assert (out / "predictions.png").read_bytes() == before and leftovers(out) == []


def test_sigterm_at_random_moments_never_leaves_a_broken_folder(tiny_data, tmp_path):
    """Seeded random moments from start-up to the report: every outcome is 0 or 130, the folder
    is absent, or holds a run that --resume continues to the end."""
    rng = random.Random(15)
    procs = []
    for i in range(3):
        out = tmp_path / f"run{i}"
        proc = subprocess.Popen([*FMCLF, "run", *settings(tiny_data, epochs=3), "--visualizer", "none", "--out",
                                 str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((out, proc, rng.uniform(0.0, 8.0)))
    for _out, proc, _delay in procs:
        handling(proc)
    start = time.monotonic()
    for _out, proc, delay in sorted(procs, key=lambda t: t[2]):
        time.sleep(max(0.0, start + delay - time.monotonic()))
        proc.send_signal(signal.SIGTERM)
    for out, proc, delay in procs:
        stdout, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 130), (delay, stdout, err)
        assert "Traceback" not in err, err
        if not out.exists():
            continue
        assert leftovers(out) == []
        if (out / "config.toml").exists():
            resumed = run_fmclf("run", "--resume", str(out), "--visualizer", "none")
            assert resumed.returncode == 0, resumed.stderr
            assert (out / "report.md").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 3
        else:
            assert sorted(os.listdir(out)) in ([], [".lock"])


@pytest.mark.parametrize("written", [["config.toml"], ["config.toml", "checkpoint.pt", "model.pt", "summary.json"]])
def test_a_stop_outside_training_advises_the_front_ends_resume_as_a_stop_inside_it_does(tmp_path, written):
    """fmclf.fit stopped while its data loads or its pictures are drawn says to resume with fmclf.fit, as a stop
    mid-epoch does, not with `fmclf run --resume`, which cannot rebuild its Python objects."""
    from fmclf.dist.comm import Solo
    from fmclf.run.runner import _after_stop
    from fmclf.wording import Wording, speaking

    for name in written:
        (tmp_path / name).write_text("")
    with speaking(Wording(python=True, resume=lambda run_dir: f"fmclf.fit(model=..., resume={str(run_dir)!r})")):
        text = _after_stop("SIGINT", tmp_path, Solo())
    assert f"`fmclf.fit(model=..., resume={str(tmp_path)!r})`" in text and "fmclf run --resume" not in text, text
    assert f"`fmclf run --resume {tmp_path}`" in _after_stop("SIGINT", tmp_path, Solo())
