"""fmclf.fit as a plugin author uses it outside pytest: plugins=[module], an (optimizer, scheduler)
pair, an updater factory, and every setting of `fmclf run` as a keyword."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import shutil
import subprocess
import sys

import authors_plugin
import pytest
import torch

import fmclf
from fmclf.cli.run import run as run_command
from fmclf.errors import UsageError
from fmclf.run.config import RunConfig


def tiny(tiny_data, **extra) -> dict:
    return {"data_root": str(tiny_data), "verify": False, "batch_size": 16, "seed": 3, "device": "cpu",
            "visualizers": (), "out": False, **extra}


def test_every_run_setting_is_a_keyword_of_fit():
    """One list of settings (RunConfig's fields): each is a flag of `fmclf run` and a keyword of fmclf.fit."""
    settings = {f.name for f in dataclasses.fields(RunConfig)} - {"options", "from_python"}
    flags = {p.name for p in run_command.params}
    keywords = set(inspect.signature(fmclf.fit).parameters)
    assert settings <= flags, settings - flags
    assert settings <= keywords, settings - keywords


def test_fit_takes_threads_and_cuda_graphs(tiny_data, tmp_path):
    result = fmclf.fit(model="nn", epochs=1, threads=1, cuda_graphs=False, **{**tiny(tiny_data), "out": tmp_path / "r"})
    assert result.config.threads == 1 and result.config.cuda_graphs is False
    assert "threads = 1" in (tmp_path / "r" / "config.toml").read_text()


def test_fit_with_a_plugin_module_a_scheduler_pair_and_a_plateau_callback(tiny_data, tmp_path):
    """The plugin's callback lowers the rate of the (optimizer, scheduler) pair given as objects."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    result = fmclf.fit(model=model, updater=(optimizer, scheduler), epochs=3, plugins=[authors_plugin],
                       callbacks=["halve"], **{**tiny(tiny_data), "out": tmp_path / "r"})
    assert [row["lr"] for row in result.history] == [0.5, 0.25, 0.125]
    assert scheduler.base_lrs == [pytest.approx(0.5 / 8)]  # the schedule scaled with the rate
    assert result.config.updater == "SGD"


def test_fit_with_an_updater_factory_gets_the_models_parameters_and_the_run_length(tiny_data):
    seen = {}

    def adamw_cosine(params, lr, epochs, steps_per_epoch):
        seen.update(lr=lr, steps=epochs * steps_per_epoch)
        optimizer = torch.optim.AdamW(params, lr=lr)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)

    result = fmclf.fit(model="nn", updater=adamw_cosine, lr=0.01, epochs=2, **tiny(tiny_data))
    assert seen == {"lr": 0.01, "steps": 2 * 6}
    assert result.history[-1]["lr"] < result.history[0]["lr"] < 0.01
    assert result.config.updater == "adamw_cosine"


def test_a_plugin_module_named_by_string_and_a_bad_one(tiny_data):
    result = fmclf.fit(model="nn", epochs=1, plugins=["authors_plugin"], callbacks=["halve"], **tiny(tiny_data))
    assert result.history[0]["lr"] == 0.1
    with pytest.raises(UsageError, match="no installed plugin or importable module is named 'no_such_plugin'"):
        fmclf.fit(model="nn", epochs=1, plugins=["no_such_plugin"], **tiny(tiny_data))
    with pytest.raises(UsageError, match="plugins= takes a list of modules"):
        fmclf.fit(model="nn", epochs=1, plugins="authors_plugin", **tiny(tiny_data))


def test_eval_scores_saved_weights_on_a_corrupted_copy(tiny_data, tmp_path):
    """The robustness experiment: trained on clean images, scored on corrupted ones (through the public
    Fashion-MNIST loader), with the data set's options on the command line."""
    from click.testing import CliRunner

    from fmclf.cli import cli

    out = tmp_path / "run"
    fmclf.fit(model="nn", epochs=2, lr=0.5, **{**tiny(tiny_data), "out": out})

    def score(*args: str) -> dict:
        result = CliRunner().invoke(cli, ["-p", "authors_plugin", "eval", str(out), "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    clean = score()
    noisy = score("--dataset", "corrupted-fashion-mnist", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                  "-o", "dataset.severity=0.6")
    assert noisy["dataset"] == "corrupted-fashion-mnist" and clean["dataset"] == "fashion-mnist"
    assert noisy["examples"] == clean["examples"] == 40
    assert noisy["test_loss"] > clean["test_loss"]  # the tiny task stays easy: the noise shows in the loss
    wrong = CliRunner().invoke(cli, ["-p", "authors_plugin", "eval", str(out), "-o", "dataset.severity=1"])
    assert wrong.exit_code == 2 and "Add --dataset NAME" in wrong.output


def test_a_metric_object_is_recorded_under_its_class_name_in_snake_case(tiny_data):
    class NLL:
        def __init__(self):
            self.reset()

        def reset(self):
            self.total, self.n = 0.0, 0

        def update(self, logits, y):
            self.total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            self.n += len(y)

        def compute(self):
            return self.total / max(self.n, 1)

    result = fmclf.fit(model="nn", epochs=1, metrics=[NLL()], **tiny(tiny_data))
    assert result.history[0]["test_nll"] == pytest.approx(result.history[0]["test_loss"])


def test_resume_from_python_may_change_threads_and_cuda_graphs_as_the_command_line_may(tiny_data, tmp_path):
    out = tmp_path / "r"
    fmclf.fit(model="nn", epochs=1, **{**tiny(tiny_data), "out": out})
    more = fmclf.fit(resume=out, epochs=2, threads=1, cuda_graphs=False, visualizers=())
    assert len(more.history) == 2 and more.config.threads == 1
    with pytest.raises(UsageError, match=r"only epochs, device, threads, cuda_graphs and visualizers may change"):
        fmclf.fit(resume=out, epochs=3, lr=0.5, visualizers=())


def test_a_new_run_setting_is_one_field(tiny_data, tmp_path):
    """docs/architecture.md's promise: a new run setting is one Settings field (its default, help and check)
    plus the code where it acts. In a copy of fmclf with one field added, the field alone gives `fmclf run`
    its flag and help, fit its keyword and docstring line, validate its check and config.toml its type."""
    copy = tmp_path / "fmclf"
    shutil.copytree(pathlib.Path(fmclf.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "run" / "config.py"
    anchor = '    lr: float = setting(0.1, "Learning rate.", _positive)\n'
    assert anchor in config.read_text()
    config.write_text(config.read_text().replace(
        anchor, anchor + '    momentum: float = setting(0.5, "Momentum of the updates.", _positive)\n'))
    (tmp_path / "bad.toml").write_text('momentum = "much"\n')
    script = f"""
import inspect, pathlib, fmclf
from click.testing import CliRunner
from fmclf.cli import cli
from fmclf.errors import ConfigError, UsageError
from fmclf.run.config import RunConfig, load_config
assert pathlib.Path(fmclf.__file__).parent == pathlib.Path({str(copy)!r}), fmclf.__file__
shown = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
assert "--momentum FLOAT" in shown and "Momentum of the updates." in shown, shown
assert inspect.signature(fmclf.fit).parameters["momentum"].default == 0.5
assert "``momentum=0.5``: Momentum of the updates." in fmclf.fit.__doc__
try:
    RunConfig(momentum=-1.0).validate()
except UsageError as exc:
    assert "--momentum must be a finite number above 0, got -1.0. The textbook uses 0.5." == str(exc), exc
else:
    raise AssertionError("validate took momentum=-1")
try:
    load_config({str(tmp_path / "bad.toml")!r})
except ConfigError as exc:
    assert "momentum must be a number, got 'much'" in str(exc), exc
else:
    raise AssertionError("load_config took momentum = 'much'")
result = fmclf.fit(model="nn", epochs=1, momentum=0.25, data_root={str(tiny_data)!r}, verify=False, batch_size=16,
                   seed=3, device="cpu", visualizers=(), out={str(tmp_path / "run")!r})
assert result.config.momentum == 0.25
assert "momentum = 0.25" in (pathlib.Path({str(tmp_path / "run")!r}) / "config.toml").read_text()
print("ok")
"""
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.stdout.splitlines()[-1:] == ["ok"], done.stdout + done.stderr
