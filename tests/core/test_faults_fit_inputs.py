"""fmclf.fit checks the data, optimizer and metrics it is given as a data set plugin's are checked, and
refuses what it cannot train on in words (issue 25, class 7)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.errors import DataError, UsageError


def _batches(n: int = 3, *, labels=None, rows: int = 16):
    import torch

    g = torch.Generator().manual_seed(0)
    y = (torch.arange(rows) % 10) if labels is None else labels
    return [(torch.rand(rows, 1, 28, 28, generator=g), y) for _ in range(n)]


def _fit(dataset, **kwargs):
    kwargs = {"model": "nn", "epochs": 1, "device": "cpu", "seed": 0, "visualizers": (), "out": False, **kwargs}
    return fmclf.fit(dataset=dataset, **kwargs)


# --- empty training data -----------------------------------------------------------------------------

def test_no_training_batches_is_refused():
    with pytest.raises(UsageError, match="the training batches are empty: there is nothing to train on"):
        _fit(([], _batches()))


def test_training_batches_of_no_examples_are_refused():
    import torch

    empty = [(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))]
    with pytest.raises(UsageError, match="a batch holds 0 examples .* at least one"):
        _fit((empty, _batches()))


def test_a_batch_with_more_labels_than_examples_is_refused():
    import torch

    odd = [(torch.rand(8, 1, 28, 28), torch.arange(16) % 10)]
    with pytest.raises(UsageError, match="a batch holds 8 examples .* and 16 labels"):
        _fit((odd, _batches()))


# --- labels -----------------------------------------------------------------------------------------

def test_test_labels_of_minus_one_are_refused_naming_the_labels():
    import torch

    with pytest.raises(UsageError, match=r"the labels include -1, but labels are class indices from 0 to C-1"):
        _fit((_batches(), _batches(labels=torch.full((16,), -1))))


def test_test_labels_of_minus_one_with_class_names_are_the_data_sets_fault():
    import torch

    bad = torch.arange(16) % 10
    bad[3] = -1
    with pytest.raises(DataError, match=r"gave a test label of -1, but it has 10 classes"):
        _fit(_Data(_batches(), _batches(labels=bad)))


def test_training_labels_of_minus_one_are_the_data_sets_fault():
    import torch

    bad = torch.arange(16) % 10
    bad[0] = -1
    with pytest.raises(DataError, match=r"gave a training label of -1"):
        _fit((_batches(labels=bad), _batches()))


class _Data:
    def __init__(self, train, test):
        self.train, self.test, self.classes = train, test, [str(i) for i in range(10)]


# --- batches of Python lists ---------------------------------------------------------------------------

def test_batches_of_python_lists_of_tensors_are_refused_with_what_to_pass():
    import torch

    g = torch.Generator().manual_seed(0)
    listed = [([torch.rand(1, 28, 28, generator=g) for _ in range(4)], [0, 1, 2, 3])]
    with pytest.raises(UsageError, match=r"a batch's X is a list \(of Tensor\).*torch\.stack a list of tensors"):
        _fit((listed, listed))


def test_batches_of_ragged_lists_are_refused_with_what_to_pass():
    ragged = [([[0.0] * 784, [0.0] * 10], [0, 1])]
    with pytest.raises(UsageError, match=r"a batch's X is a list \(of list\)"):
        _fit((ragged, ragged))


def test_batches_of_nested_number_lists_still_train():
    """What torch.as_tensor turns into one tensor keeps working."""
    batch = ([[[0.5] * 28] * 28] * 4, [0, 1, 2, 3])
    result = _fit(([batch], [batch]), model="nn")
    assert len(result.history) == 1


# --- the optimizer --------------------------------------------------------------------------------------

def test_an_optimizer_over_no_trainable_tensor_is_refused():
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    frozen = torch.optim.SGD([torch.zeros(3)], lr=0.1)
    with pytest.raises(UsageError, match="the SGD optimizer holds no tensor that requires grad"):
        _fit((_batches(), _batches()), model=net, updater=frozen)


def test_an_optimizer_over_another_models_parameters_is_refused():
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    other = torch.nn.Linear(3, 3)
    with pytest.raises(UsageError, match="the Adam optimizer updates none of the model's parameters"):
        _fit((_batches(), _batches()), model=net, updater=torch.optim.Adam(other.parameters()))


def test_an_optimizer_over_a_functions_params_still_trains():
    import torch

    W = torch.normal(0, 0.01, (784, 10), requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    before = W.detach().clone()
    _fit((_batches(), _batches()), model=lambda X: X.reshape(-1, 784) @ W + b, params=[W, b],
         updater=torch.optim.SGD([W, b], lr=0.1), loss="fused")
    assert not torch.equal(before, W.detach())


# --- a metric that is nan --------------------------------------------------------------------------------

class _NanMetric:
    def update(self, logits, y):
        pass

    def compute(self):
        return {"undefined": float("nan"), "fine": 1.0, "far": float("inf")}

    def reset(self):
        pass


def test_a_metric_of_nan_is_recorded_as_null_and_every_file_is_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    result = _fit((_batches(), _batches()), metrics=[_NanMetric()], out=run_dir)
    assert result.history[-1]["test_nan_metric_undefined"] is None
    assert result.history[-1]["test_nan_metric_far"] is None
    assert result.history[-1]["test_nan_metric_fine"] == 1.0

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))

    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        assert strict(line)["test_nan_metric_undefined"] is None
    assert strict((run_dir / "summary.json").read_text())["test_nan_metric_undefined"] is None
    from fmclf.cli import cli

    listed = CliRunner().invoke(cli, ["runs", "--json", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    strict(listed.stdout)
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.summary.values())


def test_a_plugin_metric_of_nan_is_null_and_the_report_is_redrawn(fmclf_plugin, tiny_data, tmp_path):
    import types

    from fmclf.cli import cli

    fmclf_plugin(types.SimpleNamespace(register_metrics=fmclf.hookimpl(
        lambda register: register("nan-metric", lambda: _NanMetric()))), name="nan-plugin")
    run_dir = tmp_path / "run"
    done = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "1",
                                    "--device", "cpu", "--visualizer", "none", "--metric", "nan-metric",
                                    "--seed", "0", "--out", str(run_dir)])
    assert done.exit_code == 0, done.output
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1],
                     parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert row["test_nan-metric_undefined"] is None and row["test_nan-metric_fine"] == 1.0
    redrawn = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert redrawn.exit_code == 0, redrawn.output
