"""Callbacks change the learning rate through ``event.control`` (``set_lr`` / ``scale_lr``): applied
from the next epoch, recorded as ``lr`` in metrics.jsonl, checkpointed and exact on resume, with the
textbook updater, a torch optimizer and an ``(optimizer, scheduler)`` pair; refused, in words, where
it cannot apply. tests/authors_plugin.py is written against the public API alone."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.events import Control
from fmclf.train.updaters import OptimizerUpdater, change_lr

TIMING = {"seconds", "peak_memory"}
INTERRUPT = ["--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=0",
             "-o", "visualizer.signal-at.signal_name=SIGTERM"]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["-p", "authors_plugin", "-p", "chaos_plugin", *args], catch_exceptions=False)


def common(data: pathlib.Path, epochs: int = 4) -> list[str]:
    return ["run", "--data-root", str(data), "-o", "dataset.verify=false", "--batch-size", "16",
            "--epochs", str(epochs), "--seed", "7", "--device", "cpu", "--lr", "0.3"]


def rows(run_dir: pathlib.Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: pathlib.Path) -> dict:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)


def test_a_callback_halving_the_rate_is_recorded_per_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = invoke(*common(tiny_data, epochs=3), "--callback", "halve", "--visualizer", "none", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [r["lr"] for r in rows(out)] == [0.3, 0.15, 0.075]


UPDATERS = {
    "sgd": ["--updater", "sgd"],
    "torch-sgd": ["--updater", "torch-sgd", "-o", "updater.momentum=0.9"],
    "torch-sgd-cosine": ["--updater", "torch-sgd", "-o", "updater.schedule=cosine"],
    "pair": ["--updater", "sgd-cosine"],
}


@pytest.mark.parametrize("updater", list(UPDATERS))
def test_a_rate_set_by_a_callback_is_exact_on_resume(tiny_data, tmp_path, updater):
    """Stopped by SIGTERM after epoch 2 (the rate was set after epoch 1) and resumed: the same rows and
    weights as the run that was never stopped."""
    steer = ["--callback", "set-lr-at", "-o", "callback.set-lr-at.at=1", "-o", "callback.set-lr-at.value=0.05",
             *UPDATERS[updater]]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert invoke(*common(tiny_data), *steer, "--visualizer", "none", "--out", str(whole)).exit_code == 0
    stopped = invoke(*common(tiny_data), *steer, *INTERRUPT, "--out", str(parts))
    assert stopped.exit_code == 130, stopped.output
    resumed = invoke("run", "--resume", str(parts), "--visualizer", "none")
    assert resumed.exit_code == 0, resumed.output
    assert rows(parts) == rows(whole)
    assert rows(whole)[1]["lr"] <= 0.05 < rows(whole)[0]["lr"]
    for key, value in weights(whole).items():
        assert torch.equal(value, weights(parts)[key]), key


def test_set_lr_makes_the_next_epoch_start_at_that_rate(tiny_data, tmp_path):
    """With a schedule, set_lr sets the rate of the next step; the schedule goes on at the new scale."""
    out = tmp_path / "run"
    result = invoke(*common(tiny_data, epochs=3), "--updater", "torch-sgd", "-o", "updater.schedule=cosine",
                    "--callback", "set-lr-at", "-o", "callback.set-lr-at.value=0.05", "--visualizer", "none",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    lrs = [r["lr"] for r in rows(out)]
    assert lrs[1] < 0.05 and lrs[2] < lrs[1]  # the rate of each epoch's last step, still falling


def test_a_scheduler_pair_keeps_its_shape_at_the_new_scale():
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    updater = OptimizerUpdater(opt, sched)
    for _ in range(3):
        w.grad = torch.zeros(2)
        updater.step(1)
    assert change_lr(updater, "set", 0.1) == pytest.approx(0.1)
    assert sched.base_lrs == [pytest.approx(0.1 / 0.25)]  # the factor multiplies the schedule's base rate
    w.grad = torch.zeros(2)
    updater.step(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 / 5)  # the schedule goes on: base * 1/(1+4)


@pytest.mark.parametrize(("when", "words"), [
    ("on_batch_end", "call it in on_fit_start or on_epoch_end"),
])
def test_set_lr_between_batches_is_refused_in_words(tiny_data, tmp_path, when, words):
    result = invoke(*common(tiny_data, epochs=1), "--callback", "set-lr-at", "-o", f"callback.set-lr-at.when={when}",
                    "--visualizer", "none", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert words in result.output and "Traceback" not in result.output


def test_a_rate_that_is_not_a_positive_number_is_refused(tiny_data, tmp_path):
    result = invoke(*common(tiny_data, epochs=1), "--callback", "set-lr-at", "-o", "callback.set-lr-at.value=0",
                    "--visualizer", "none", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "set_lr(0.0); it takes a finite number above 0" in result.output


def test_a_visualizer_cannot_change_the_rate():
    control = Control()
    control._caller = ("visualizer", "visualizer 'v'")
    with pytest.raises(Exception, match="a visualizer shows and does not steer"):
        control.scale_lr(0.5)


def test_requests_in_one_event_compose():
    control = Control()
    control.set_lr(0.2)
    control.scale_lr(0.5)
    assert control.take_lr() == ("set", 0.1, "a callback")
    assert control.take_lr() is None


def test_an_updater_that_hides_its_rate_is_named(tiny_data, tmp_path):
    """The textbook's updater(batch_size) keeps its rate in a global: fmclf cannot change it, and says so."""
    import authors_plugin

    import fmclf

    params = [torch.zeros(784, 10, requires_grad=True), torch.zeros(10, requires_grad=True)]

    def net(X):
        return X.reshape(-1, 784) @ params[0] + params[1]

    def updater(batch_size):
        with torch.no_grad():
            for p in params:
                p -= 0.1 * p.grad / batch_size
                p.grad.zero_()

    with pytest.raises(fmclf.ComponentError, match="cannot take it: it keeps its learning rate where fmclf"):
        fmclf.fit(model=net, params=params, updater=updater, epochs=1, batch_size=16, device="cpu", seed=0,
                  visualizers=(), callbacks=["halve"], out=False, plugins=[authors_plugin],
                  options={"dataset": {"data_root": str(tiny_data), "verify": False}})


def test_resume_with_more_epochs_continues_the_schedule_and_says_so(tiny_data, tmp_path):
    """A cosine schedule built for 2 epochs, resumed with --epochs 4: the rate never rises again (the
    schedule is not rebuilt over the new length), and the run says what it does."""
    out = tmp_path / "run"
    first = invoke(*common(tiny_data, epochs=2), "--updater", "torch-sgd", "-o", "updater.schedule=cosine",
                   "-o", "updater.min_lr=0.01", "--visualizer", "none", "--out", str(out))
    assert first.exit_code == 0, first.output
    more = invoke("run", "--resume", str(out), "--epochs", "4", "--visualizer", "none")
    assert more.exit_code == 0, more.output
    assert "schedule was built for 2 epochs and goes on as it is, not over the new 4" in more.output
    lrs = [r["lr"] for r in rows(out)]
    assert lrs[2] == lrs[3] == pytest.approx(0.01)  # past its end the cosine holds its floor
    assert all(later <= earlier for earlier, later in zip(lrs, lrs[1:]))
    again = invoke("run", "--resume", str(out), "--epochs", "5", "--visualizer", "none")  # recorded in the checkpoint
    assert again.exit_code == 0 and "built for 2 epochs" in again.output


def test_under_torchrun_rank_0s_rate_change_is_applied_on_every_process(tiny_data, tmp_path):
    """Only rank 0 builds callbacks; both processes train at the halved rate and end with the same weights."""
    import os
    import subprocess
    import sys

    tests = pathlib.Path(__file__).parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")]))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "fmclf",
         "-p", "authors_plugin", *common(tiny_data, epochs=3), "--callback", "halve", "--visualizer", "none",
         "--out", "two"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr
    assert [r["lr"] for r in rows(tmp_path / "two")] == [0.3, 0.15, 0.075]
    digests = json.loads((tmp_path / "two" / "summary.json").read_text())["distributed"]["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
