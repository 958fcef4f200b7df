"""fmclf.draw.pictures.save_all: a run's pictures drawn by two processes are the files one process draws,
and what fails in either is raised, as it would be one by one."""

from __future__ import annotations

import errno
import os
import threading

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from fmclf.draw import pictures
from fmclf.errors import WriteError

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
HISTORY = [{"epoch": e, "train_loss": 0.8 / e, "train_acc": 0.7 + 0.02 * e, "test_acc": 0.69 + 0.02 * e,
            "test_loss": 0.9 / e, "lr": 0.1, "seconds": 0.1} for e in range(1, 5)]
IMAGES = np.linspace(0.0, 1.0, 20 * 28 * 28, dtype=np.float32).reshape(20, 1, 28, 28)
forks = pytest.mark.skipif(not pictures._can_fork(), reason="forks only on Linux with two usable CPUs")


def _jobs(folder):
    confusion = [[90 if i == j else i + j for j in range(10)] for i in range(10)]
    return [
        (lambda: pictures.confusion_figure(confusion, CLASSES), folder / "confusion.png"),
        (lambda: pictures.metrics_figure(HISTORY, epochs=4), folder / "metrics.png"),
        (lambda: pictures.curves_figure(HISTORY, epochs=4), folder / "curves.png"),
        (lambda: pictures.predictions_figure(IMAGES, CLASSES * 2, CLASSES[1:] + CLASSES[:1] + CLASSES, title="t"),
         folder / "predictions.png"),
    ]


@forks
def test_two_processes_write_the_bytes_one_process_writes(tmp_path, monkeypatch):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    pictures.save_all(_jobs(tmp_path / "two"))
    monkeypatch.setattr(pictures, "_can_fork", lambda: False)
    pictures.save_all(_jobs(tmp_path / "one"))
    for name in ("confusion.png", "metrics.png", "curves.png", "predictions.png"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert not [p for p in (tmp_path / "two").iterdir() if p.name not in
                ("confusion.png", "metrics.png", "curves.png", "predictions.png")]  # no temporary left behind


@forks
def test_a_job_the_child_draws_raises_here_with_its_type_and_words(tmp_path):
    def broken():
        raise ValueError("the history holds no numeric metric")

    jobs = _jobs(tmp_path)
    jobs[1] = (broken, tmp_path / "metrics.png")  # the child draws jobs 1 and 3
    with pytest.raises(ValueError, match="the history holds no numeric metric"):
        pictures.save_all(jobs)
    assert (tmp_path / "confusion.png").exists() and (tmp_path / "curves.png").exists()  # this process's half


@forks
def test_a_write_error_in_the_child_keeps_its_errno(tmp_path):
    def full():
        raise WriteError("cannot write 'metrics.png': No space left on device.", errno=errno.ENOSPC,
                         filename="metrics.png")

    jobs = _jobs(tmp_path)
    jobs[3] = (full, tmp_path / "predictions.png")
    with pytest.raises(WriteError, match="No space left") as info:
        pictures.save_all(jobs)
    assert info.value.errno == errno.ENOSPC and info.value.filename == "metrics.png"


@forks
def test_a_child_that_dies_is_an_error_not_a_hang(tmp_path):
    jobs = _jobs(tmp_path)
    jobs[1] = (lambda: os.kill(os.getpid(), 9), tmp_path / "metrics.png")
    with pytest.raises(RuntimeError, match="stopped by signal 9"):
        pictures.save_all(jobs)


def test_with_another_thread_running_nothing_is_forked(tmp_path, monkeypatch):
    def no_fork():
        raise AssertionError("forked beside another thread")

    monkeypatch.setattr(os, "fork", no_fork)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        pictures.save_all(_jobs(tmp_path))
    finally:
        release.set()
        other.join()
    assert len(list(tmp_path.iterdir())) == 4


def test_one_job_or_none_is_drawn_here(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fork", lambda: (_ for _ in ()).throw(AssertionError("forked for one job")))
    pictures.save_all([])
    pictures.save_all(_jobs(tmp_path)[:1])
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]
