"""Blame in one place: an fmclf error passes through as it is, anything else a component
raises names that component; logits of the wrong shape are the model's fault, found
before the loss is called with them."""

from __future__ import annotations

import types

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.errors import ComponentError, DataError
from fmclf.train.blame import blame, blame_gradients


def test_an_fmclf_error_passes_through_untouched():
    error = DataError("the data moved")
    with pytest.raises(DataError) as info, blame("dataset 'x'", "while yielding training batches in epoch 1"):
        raise error
    assert info.value is error


def test_any_other_exception_names_the_component_and_keeps_the_cause():
    with pytest.raises(ComponentError) as info, blame("model 'm' (plugin 'p')", "on batch 2 of epoch 1"):
        raise ValueError("bad matrix")
    assert str(info.value) == (
        "model 'm' (plugin 'p') raised ValueError on batch 2 of epoch 1: bad matrix. This is a fault in that "
        "component; report it to its authors, or choose another with `fmclf plugins`."
    )
    assert isinstance(info.value.__cause__, ValueError)


def test_an_interrupt_is_nobodys_fault():
    with pytest.raises(KeyboardInterrupt), blame("model 'm'", "on batch 1 of epoch 1"):
        raise KeyboardInterrupt


def test_a_failing_backward_names_the_loss_and_the_model_without_records():
    expected = (r"^computing gradients raised ArithmeticError on batch 1 of epoch 1: no gradient\. "
                r"The backward pass runs through the loss and the model;")
    with pytest.raises(ComponentError, match=expected), blame_gradients({}, "on batch 1 of epoch 1"):
        raise ArithmeticError("no gradient")


def _models(outputs: int | None):
    """A plugin with model 'odd': flatten + linear to ``outputs`` columns, or (N,) logits when None."""

    def odd(*, num_inputs: int, num_classes: int):
        import torch

        if outputs is None:
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, 1), torch.nn.Flatten(0))
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, outputs))

    return types.SimpleNamespace(register_models=fmclf.hookimpl(lambda register: register("odd", odd)))


def _run(tiny_data, tmp_path, *args: str):
    return CliRunner().invoke(cli, [
        "run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--model", "odd", "--epochs", "1",
        "--batch-size", "16", "--visualizer", "none", "--device", "cpu", "--out", str(tmp_path / "run"), *args,
    ])


@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_a_model_with_five_outputs_for_ten_classes_is_blamed_as_the_model(fmclf_plugin, tiny_data, tmp_path, loss):
    fmclf_plugin(_models(5), name="five-plugin")
    result = _run(tiny_data, tmp_path, "--loss", loss)
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert message.startswith(
        "Error: model 'odd' (plugin 'five-plugin') returned 5 outputs per example, but the data set has 10 classes; "
        "a model must return logits of shape (N, num_classes) = (16, 10)."
    ), message
    assert "loss" not in message.split(";")[0] and f"loss '{loss}'" not in message
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "model.pt").exists()


def test_logits_of_one_dimension_are_blamed_on_the_model_before_the_loss_sees_them(fmclf_plugin, tiny_data, tmp_path):
    fmclf_plugin(_models(None), name="flat-plugin")
    result = _run(tiny_data, tmp_path)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(
        "Error: model 'odd' (plugin 'flat-plugin') returned shape (16,) for a batch of 16; a model must return "
        "logits of shape (N, num_classes)."
    ), result.stderr


def test_a_data_error_from_the_test_set_is_not_blamed_on_the_model(tiny_data):
    """Evaluation runs the model over the test batches; the data set's own DataError stays its own."""
    import torch
    from helpers import assemble_parts

    from fmclf.train.engine import Trainer

    parts = assemble_parts(tiny_data)

    class Vanishing:
        def __len__(self):
            return 1

        def __iter__(self):
            raise DataError("the test files vanished while reading them")

    parts.dataset.test = Vanishing()
    with pytest.raises(DataError, match="the test files vanished"):
        Trainer(parts, device=torch.device("cpu"), epochs=1).evaluate()
