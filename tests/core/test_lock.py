"""One writer per run folder: the lock a run holds for its whole life."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import run_fmclf

from fmclf.run.lock import NAME, RunLock, RunLocked, holder


def test_a_second_lock_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    first = RunLock(tmp_path)
    assert first.acquire() is None and first.held
    assert holder(tmp_path)["pid"] == os.getpid()
    with pytest.raises(RunLocked, match=rf"in use by process {os.getpid()}.*one writer at a time") as info:
        RunLock(tmp_path).acquire("resume it")
    assert "cannot resume it" in str(info.value) and info.value.exit_code == 2
    first.release()
    assert holder(tmp_path) is None and (tmp_path / NAME).read_text() == ""  # released cleanly
    again = RunLock(tmp_path)
    assert again.acquire() is None  # nothing stale to report
    again.release(remove=True)
    assert not (tmp_path / NAME).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(tmp_path):
    code = ("import sys, time; from fmclf.run.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert holder(tmp_path)["pid"] == child.pid
        with pytest.raises(RunLocked, match=f"process {child.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert holder(tmp_path) is None  # the kernel dropped the dead process's lock
    assert json.loads((tmp_path / NAME).read_text())["pid"] == child.pid  # but its record stayed
    lock = RunLock(tmp_path)
    note = lock.acquire()
    assert note and f"left by process {child.pid}" in note and "killed" in note
    lock.release()


def test_resume_is_refused_while_the_run_trains(tiny_data, tmp_path):
    run = tmp_path / "run"
    slow = run_fmclf("run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "1",
                     "--batch-size", "96", "--visualizer", "none", "--seed", "1", "--out", str(run))
    assert slow.returncode == 0, slow.stderr
    held = RunLock(run)
    held.acquire()  # as a run that trains holds it
    try:
        result = run_fmclf("run", "--resume", str(run), "--epochs", "2", "--visualizer", "none")
        assert result.returncode == 2, result.stderr
        assert f"is in use by process {os.getpid()}" in result.stderr and "cannot resume it" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        held.release()
    result = run_fmclf("run", "--resume", str(run), "--epochs", "2", "--visualizer", "none")
    assert result.returncode == 0, result.stderr
    assert holder(run) is None


def test_two_runs_into_one_folder_cannot_both_write_it(tiny_data, tmp_path):
    out = tmp_path / "same"
    args = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "2", "--batch-size", "8",
            "--visualizer", "none", "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-m", "fmclf", *args, "--seed", str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes[0] == 0 and codes[1] == 2, results  # one trains, the other is refused
    loser = next(r for r in results if r[0] == 2)
    assert "in use by process" in loser[2] or "already holds a run" in loser[2]
    winner_seed = 1 if results[0][0] == 0 else 2
    config = (out / "config.toml").read_text()
    assert f"seed = {winner_seed}\n" in config and f"seed {winner_seed}," in (out / "report.md").read_text()
