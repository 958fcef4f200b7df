"""The default thread count follows its rule, is recorded, and OpenMP's idle threads sleep."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.run import threads
from fmclf.run.threads import SMALL_BATCH_WORK, Choice, ContentionWatch, batch_work, calm_openmp, choose


def test_openmp_is_asked_to_let_idle_threads_sleep_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(threads, "sys", SimpleNamespace(modules={}))  # as before torch is imported
    env: dict[str, str] = {}
    assert calm_openmp(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not calm_openmp(mine) and mine == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_too_late_once_torch_is_loaded():
    env: dict[str, str] = {}
    assert "torch" in sys.modules and not calm_openmp(env) and env == {}


def test_the_console_script_sets_it_before_torch_loads():
    probe = ("import os, sys\nfrom fmclf.cli import main\nsys.argv = ['fmclf', '--help']\ntry:\n    main()\n"
             "except SystemExit:\n    pass\nprint('POLICY', os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "POLICY PASSIVE False"


def test_a_small_model_gets_one_thread_a_large_one_every_cpu():
    assert choose(None, 2_000_000, cpus=8, environ={}) == Choice(1, "small model", chosen=True)
    big = choose(None, SMALL_BATCH_WORK, cpus=8, environ={})
    assert big.threads == 8 and big.chosen


def test_what_the_user_set_wins():
    assert choose(3, 10**9, cpus=8, environ={}) == Choice(3, "--threads", chosen=False)
    assert (choose(None, 10**9, cpus=8, environ={"OMP_NUM_THREADS": "2"}, current=2)
            == Choice(2, "$OMP_NUM_THREADS", chosen=False))
    assert choose(None, 10, cpus=8, environ={"MKL_NUM_THREADS": "4"}, current=4).threads == 4


def test_processes_on_one_machine_share_its_cpus():
    assert choose(None, 10**9, cpus=8, processes_here=4, environ={}).threads == 2
    assert choose(None, 10**9, cpus=2, processes_here=4, environ={}) == Choice(1, "one CPU", chosen=True)


def test_batch_work_is_parameters_times_batch():
    from fmclf_plugins.softmax import SoftmaxScratch

    assert batch_work(SoftmaxScratch(784, 10), 256) == 7850 * 256
    frozen = torch.nn.Linear(100, 10)
    frozen.weight.requires_grad_(False)
    assert batch_work(frozen, 2) == 20  # only what trains
    assert batch_work(object(), 256) == SMALL_BATCH_WORK  # no parameters to count: not called small


def _epoch(n, seconds):
    return SimpleNamespace(metrics={"epoch": n, "seconds": seconds})


def test_contention_is_said_once_with_advice_for_the_thread_count(monkeypatch):
    said: list[str] = []
    watch = ContentionWatch(2, said.append)
    for n, seconds in enumerate([0.30, 0.20, 0.25, 0.50, 0.90], start=1):
        watch.on_epoch_end(_epoch(n, seconds))
    assert len(said) == 1
    assert (said[0].startswith("Note: epoch 4 took 0.50 s, 2.5x the fastest so far (0.20 s)")
            and "--threads 1" in said[0])
    for cpus, advice in ((1, "one thread already"), (4, "--threads 4 gets it a larger share")):
        # one thread: on an overcommitted machine, more threads get more of the cores' time
        monkeypatch.setattr(threads, "usable_cpus", lambda cpus=cpus: cpus)
        one: list[str] = []
        watch = ContentionWatch(1, one.append)
        for n, seconds in enumerate([0.2, 0.5], start=1):
            watch.on_epoch_end(_epoch(n, seconds))
        assert advice in one[0]


def test_tiny_epochs_do_not_count_as_contention():
    said: list[str] = []
    watch = ContentionWatch(2, said.append)
    for n, seconds in enumerate([0.001, 0.004, 0.02], start=1):  # jitter of milliseconds
        watch.on_epoch_end(_epoch(n, seconds))
    assert said == []


def _run(tiny_data, out, *flags):
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--seed", "1",
                                      "--epochs", "1", "--visualizer", "none", "--device", "cpu", "--out", str(out),
                                      *flags])
    assert result.exit_code == 0, result.output
    return result.output, tomllib.loads((out / "config.toml").read_text())


def test_a_run_records_and_says_the_count_it_chose(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        output, config = _run(tiny_data, tmp_path / "auto")
        assert config["threads"] == 1 and config["provenance"]["threads"] == 1
        assert "on cpu (1 thread: small model)" in output
        output, config = _run(tiny_data, tmp_path / "two", "--threads", "2")
        assert config["threads"] == 2 and "on cpu (2 threads)," in output
    finally:
        torch.set_num_threads(before)


def test_a_resumed_run_keeps_its_count(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        _run(tiny_data, tmp_path / "run", "--threads", "2")
        torch.set_num_threads(1)
        result = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path / "run"), "--epochs", "2"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 2 and "(2 threads)" in result.output
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_a_thread_variable_the_user_set_is_honoured(tiny_data, tmp_path, monkeypatch, var):
    before = torch.get_num_threads()
    monkeypatch.setenv(var, "2")
    torch.set_num_threads(2)  # what torch does with it at start-up
    try:
        _, config = _run(tiny_data, tmp_path / "env")
        assert config["threads"] == 2
    finally:
        torch.set_num_threads(before)
