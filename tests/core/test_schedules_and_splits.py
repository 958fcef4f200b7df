"""Learning-rate schedules (torch-sgd's, and (optimizer, scheduler) pairs), the validation split,
and what held-out evaluation records."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.data import stratified_split
from fmclf.errors import ComponentError
from fmclf.kinds import BY_NAME
from fmclf.testing import check_updater
from fmclf.train.updaters import adapt_updater, current_lr
from fmclf_plugins.schedules import factor
from fmclf_plugins.updaters import torch_sgd


def rates(schedule: str, epochs: int = 4, steps: int = 5, **options) -> list[float]:
    """The rate of every step of a run, as torch-sgd schedules it."""
    param = torch.nn.Parameter(torch.zeros(1))
    built = torch_sgd(params=[param], lr=0.5, epochs=epochs, steps_per_epoch=steps, schedule=schedule, **options)
    updater = adapt_updater(built)
    out = []
    for _ in range(epochs * steps):
        param.grad = torch.zeros(1)
        updater.step(1)
        out.append(current_lr(updater))
    return out


def test_constant_without_warmup_is_plain_sgd_as_before():
    built = torch_sgd(params=[torch.nn.Parameter(torch.zeros(1))], lr=0.5, epochs=3, steps_per_epoch=4)
    assert isinstance(built, torch.optim.SGD)  # no scheduler at all: bit for bit what it was


def test_cosine_falls_to_min_lr_over_the_whole_run_after_a_linear_warmup():
    got = rates("cosine", warmup=1.0, min_lr=0.05)
    assert got[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # one epoch of 5 steps rising to lr
    tail = got[5:]
    assert tail == sorted(tail, reverse=True) and tail[0] == pytest.approx(0.5)
    assert tail[-1] == pytest.approx(0.05 + 0.45 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))


def test_step_drops_by_gamma_every_step_epochs():
    got = rates("step", epochs=6, steps=2, step_epochs=2, gamma=0.5)
    assert got == pytest.approx([0.5] * 4 + [0.25] * 4 + [0.125] * 4)


def test_onecycle_is_torchs_onecycle_rate():
    got = rates("onecycle", epochs=4, steps=5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=20, cycle_momentum=False)
    want = []
    for _ in range(20):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert got == pytest.approx(want, rel=1e-9)


def test_the_schedule_factor_never_runs_off_the_end():
    f = factor("cosine", 10, 0, floor=0.1)
    assert f(10) == pytest.approx(0.1) and f(25) == pytest.approx(0.1)  # past the end: stays at the floor


@pytest.mark.parametrize(("options", "fragment"), [
    ({"warmup": 5.0}, "option warmup of updater 'torch-sgd' is in epochs"),
    ({"schedule": "step", "gamma": 2.0}, "option gamma"),
    ({"schedule": "cosine", "min_lr": 0.9}, "option min_lr"),
])
def test_bad_schedule_options_are_refused(options, fragment):
    with pytest.raises(fmclf_option_error(), match=fragment):
        torch_sgd(params=[torch.nn.Parameter(torch.zeros(1))], lr=0.5, epochs=3, steps_per_epoch=4, **options)


def fmclf_option_error():
    from fmclf.errors import OptionError

    return OptionError


def test_the_kit_checks_a_schedule_over_the_whole_run():
    check_updater("torch-sgd", options={"schedule": "onecycle", "momentum": "0.9"})

    def short(*, params, lr: float, epochs: int, steps_per_epoch: int):  # a schedule one step too short
        opt = torch.optim.SGD(params, lr=lr)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch - 1)

    with pytest.raises(AssertionError, match="a schedule must last as long as the run it is given"):
        check_updater(short)


def test_pairs_that_are_no_updater_are_refused_in_words():
    param = torch.nn.Parameter(torch.zeros(1))
    opt, other = torch.optim.SGD([param], lr=0.1), torch.optim.SGD([param], lr=0.1)
    record = type("R", (), {"describe": lambda self: "updater 'x' (test)"})()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    for pair, fragment in (((opt, plateau), "ReduceLROnPlateau, which steps on a metric"),
                           ((opt, torch.optim.lr_scheduler.StepLR(other, 2)), "made for another optimizer"),
                           ((opt, 3), "has no step()"), ((opt,), "a pair must be")):
        with pytest.raises(ComponentError, match=fragment):
            BY_NAME["updater"].accept(record, pair)


def run(tiny_data, out, *args):
    return CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                    "--batch-size", "16", "--seed", "4", "--device", "cpu", "--visualizer", "none",
                                    "--out", str(out), *args])


def test_a_scheduled_run_logs_lr_and_resumes_bit_for_bit(tiny_data, tmp_path):
    args = ["--updater", "torch-sgd", "-o", "updater.schedule=cosine", "-o", "updater.warmup=0.5", "--lr", "0.4"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(tiny_data, full, "--epochs", "4", *args).exit_code == 0
    assert run(tiny_data, part, "--epochs", "2", *args).exit_code == 0  # the same schedule? no: it is told 2 epochs
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.4
    short = [json.loads(line)["lr"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert short[-1] < lrs[1]  # the shorter run's schedule ends sooner: the factory knew its length
    checkpoint = torch.load(full / "checkpoint.pt", weights_only=True)
    assert checkpoint["scheduler"]["last_epoch"] == 4 * 6  # stepped once per batch


def test_stratified_split_is_fixed_by_its_own_seed_and_keeps_the_class_shares():
    labels = torch.arange(1000) % 10
    train, valid = stratified_split(labels, 0.1)
    assert len(valid) == 100 and torch.bincount(labels[valid]).tolist() == [10] * 10
    assert sorted(torch.cat([train, valid]).tolist()) == list(range(1000))
    again, _ = stratified_split(labels, 0.1)
    assert torch.equal(train, again) and not torch.equal(valid, stratified_split(labels, 0.1, seed=1)[1])
    with pytest.raises(ValueError, match="above 0 and below 1"):
        stratified_split(labels, 1.0)


def test_the_validation_split_is_the_same_whatever_the_run_seed(tiny_data):
    from fmclf_plugins.fashion_mnist import fashion_mnist

    def held(seed, shard=None):
        data = fashion_mnist(batch_size=8, device=torch.device("cpu"), seed=seed, data_root=tiny_data, verify=False,
                             download=False, valid=0.25, shard=shard)
        return data, torch.cat([X for X, _ in data.valid])

    a, va = held(1)
    b, vb = held(99)
    assert torch.equal(va, vb) and len(va) == 20
    assert a.train.num_examples == 76 and b.train.num_examples == 76
    shards = [held(1, (r, 2))[1] for r in (0, 1)]  # each process holds its shard; together, the whole split
    assert sorted(torch.cat(shards).flatten(1).sum(1).tolist()) == sorted(va.flatten(1).sum(1).tolist())


def test_held_out_metrics_are_what_the_model_computes(tiny_data, tmp_path):
    """test_loss is the run's loss on the test set, test_acc its accuracy, ece torchmetrics' own."""
    out = tmp_path / "run"
    result = run(tiny_data, out, "--epochs", "1", "--metric", "ece", "--metric", "accuracy", "--metric", "loss")
    assert result.exit_code == 0, result.output
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert not any(k.startswith(("test_accuracy", "valid_")) for k in row)  # accuracy and loss are recorded anyway
    from torchmetrics.classification import MulticlassCalibrationError

    from helpers import assemble_parts

    parts = assemble_parts(tiny_data, batch_size=16, seed=4)
    parts.model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    X = torch.cat([X for X, _ in parts.dataset.test])
    y = torch.cat([y for _, y in parts.dataset.test])
    with torch.no_grad():
        logits = parts.model(X)
    assert row["test_loss"] == pytest.approx(float(parts.loss(logits, y).double().mean()), rel=1e-6)
    assert row["test_acc"] == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    ece = MulticlassCalibrationError(num_classes=10, n_bins=15)(logits.softmax(1), y)
    assert row["test_ece"] == pytest.approx(float(ece), rel=1e-5)
