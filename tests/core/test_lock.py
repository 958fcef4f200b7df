"""One writer per run folder: the lock a run holds for its whole life."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from fmclf.run.lock import NAME, RunLock, RunLocked, holder

from helpers import run_fmclf


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


def test_a_held_lock_whose_holder_cannot_be_read_is_still_refused_as_in_use_and_leaks_no_descriptor(
        tmp_path, monkeypatch):
    from fmclf.run import lock

    first = RunLock(tmp_path)
    first.acquire()

    def unreadable(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(lock, "_read", unreadable)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RunLocked, match="is in use by"):
        RunLock(tmp_path).acquire()
    assert len(os.listdir("/proc/self/fd")) == fds
    first.release()


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


TINY = ["-o", "dataset.verify=false", "--epochs", "1", "--batch-size", "96", "--visualizer", "none", "--seed", "1"]


def test_default_folder_names_cannot_collide_even_when_created_at_once(tmp_path):
    """os.mkdir either makes a name or fails: twenty threads asking for one name get twenty folders."""
    import threading

    from fmclf.run import folder

    want = tmp_path / "runs" / "20260101-000000-scratch-fused"
    got, start = [], threading.Barrier(20)

    def make():
        start.wait()
        got.append(folder.create_new(want, unique=True))

    threads = [threading.Thread(target=make) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    paths = [p for p, created in got]
    assert all(created for _, created in got) and len(set(paths)) == 20
    assert want in paths and want.with_name(want.name + "-20") in paths


def test_two_default_runs_started_together_get_two_folders(tiny_data, tmp_path):
    """Two processes whose clocks say the same second: both train, each in a folder of its own."""
    frozen = ("import sys, time; time.strftime = lambda fmt, *a: '20260101-120000'; "
              "from fmclf.cli import main; sys.argv[0] = 'fmclf'; main()")
    args = ["run", "--data-root", str(tiny_data), *TINY]
    procs = [subprocess.Popen([sys.executable, "-c", frozen, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["20260101-120000-scratch-fused", "20260101-120000-scratch-fused-2"], folders
    for name in folders:
        assert (tmp_path / "runs" / name / "model.pt").exists()
        assert len((tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()) == 1


def test_two_default_runs_in_the_same_second_get_two_folders(tiny_data, tmp_path, monkeypatch):
    """The second default run started in the same second as the first neither shares nor refuses its
    folder: it gets the next name, and a folder of that name holding someone's files is skipped too."""
    from click.testing import CliRunner

    from fmclf.cli import cli
    from fmclf.run import folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(folder.time, "strftime", lambda fmt, *a: "20260101-120000")
    stem = tmp_path / "runs" / "20260101-120000-scratch-fused"
    args = ["run", "--data-root", str(tiny_data), *TINY]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    (stem.with_name(stem.name + "-2")).mkdir()
    (stem.with_name(stem.name + "-2") / "notes.txt").write_text("mine")
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    third = stem.with_name(stem.name + "-3")
    assert f"run folder: {pathlib.Path('runs') / third.name}" in second.output
    assert (stem / "model.pt").exists() and (third / "model.pt").exists()
    assert (stem.with_name(stem.name + "-2") / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in stem.with_name(stem.name + "-2").iterdir()) == ["notes.txt"]


def test_predict_into_a_folder_another_process_writes_is_refused_elsewhere_it_works(tiny_data, tmp_path):
    run = tmp_path / "run"
    done = run_fmclf("run", "--data-root", str(tiny_data), *TINY, "--out", str(run))
    assert done.returncode == 0, done.stderr
    before = (run / "predictions.png").read_bytes()
    code = ("import sys, time; from fmclf.run.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        refused = run_fmclf("predict", str(run), "--data-root", str(tiny_data), "-n", "4")
        assert refused.returncode == 2, refused.stderr
        assert f"in use by process {child.pid}" in refused.stderr and "cannot draw its predictions" in refused.stderr
        assert "elsewhere with --out" in refused.stderr and "Traceback" not in refused.stderr
        assert (run / "predictions.png").read_bytes() == before
        elsewhere = run_fmclf("predict", str(run), "--data-root", str(tiny_data), "-n", "4",
                              "--out", str(tmp_path / "p.png"))
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert (tmp_path / "p.png").stat().st_size > 0
    finally:
        child.kill()
        child.wait()
