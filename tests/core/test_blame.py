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
        "run", "--seed", "1", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--model", "odd",
        "--epochs", "1",
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

    from fmclf.train.engine import Trainer

    from helpers import assemble_parts

    parts = assemble_parts(tiny_data)

    class Vanishing:
        def __len__(self):
            return 1

        def __iter__(self):
            raise DataError("the test files vanished while reading them")

    parts.dataset.test = Vanishing()
    with pytest.raises(DataError, match="the test files vanished"):
        Trainer(parts, device=torch.device("cpu"), epochs=1).evaluate_split("test")


# --- the real cause, not the built-in that tripped over it -----------------------------------------------

def _labelled(bad: int, *, split: str = "train", tensors: bool = True, at_batch: int = 1):
    """A plugin with data set 'odd-labels': 64 random 1x28x28 images of 10 classes, one label set to ``bad``
    (in batch ``at_batch`` of ``split``), held in tensors or yielded by a plain generator."""

    def odd_labels(*, batch_size: int, device, seed: int = 0):
        import torch

        from fmclf.data import InMemoryDataset, TensorBatches

        g = torch.Generator().manual_seed(0)
        X, y = torch.rand(64, 1, 28, 28, generator=g), torch.arange(64) % 10
        bad_y = y.clone()
        bad_y[(at_batch - 1) * batch_size] = bad
        train = TensorBatches(X, bad_y if split == "train" else y, batch_size, shuffle=False)
        test = TensorBatches(X, bad_y if split == "test" else y, batch_size, shuffle=False)
        if not tensors:
            class Plain:
                def __init__(self, inner):
                    self.inner = inner

                def __len__(self):
                    return len(self.inner)

                def __iter__(self):
                    return iter(self.inner)

            train, test = Plain(train), Plain(test)
        return InMemoryDataset(train, test, [str(i) for i in range(10)], (1, 28, 28), "made up")

    return types.SimpleNamespace(register_datasets=fmclf.hookimpl(lambda register: register("odd-labels", odd_labels)))


def _run_on(tmp_path, *args: str):
    result = CliRunner().invoke(cli, ["run", "--seed", "1", "--dataset", "odd-labels", "--epochs", "1",
                                      "--batch-size", "16",
                                      "--visualizer", "none", "--device", "cpu", "--out", str(tmp_path / "run"), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("loss", ["fused", "naive"])
@pytest.mark.parametrize("bad", [10, -1, 255])
@pytest.mark.parametrize("tensors", [True, False])
def test_labels_out_of_range_are_the_data_sets_fault(fmclf_plugin, tmp_path, loss, bad, tensors):
    fmclf_plugin(_labelled(bad, tensors=tensors), name="labels-plugin")
    result = _run_on(tmp_path, "--loss", loss)
    assert result.exit_code == 1, result.output
    assert (f"Error: dataset 'odd-labels' (plugin 'labels-plugin') gave a training label of {bad}, but it has 10 "
            f"classes") in result.stderr, result.stderr
    assert "This is the data set's doing, not the loss's or the model's" in result.stderr
    assert "report it to its authors" not in result.stderr and f"loss '{loss}'" not in result.stderr


def test_a_bad_label_in_a_later_batch_is_found_where_the_loss_trips(fmclf_plugin, tmp_path):
    fmclf_plugin(_labelled(10, tensors=False, at_batch=3), name="labels-plugin")
    result = _run_on(tmp_path, "--loss", "fused")
    assert result.exit_code == 1 and "gave a training label of 10" in result.stderr, result.stderr
    assert "report it to its authors" not in result.stderr


@pytest.mark.parametrize("bad", [10, -1])
def test_a_bad_test_label_is_not_blamed_on_the_model(fmclf_plugin, tmp_path, bad):
    fmclf_plugin(_labelled(bad, split="test", tensors=False, at_batch=2), name="labels-plugin")
    result = _run_on(tmp_path)
    assert result.exit_code == 1, result.output
    assert f"gave a test label of {bad}, but it has 10 classes" in result.stderr, result.stderr
    assert "model 'scratch'" not in result.stderr and "report it to its authors" not in result.stderr


@pytest.mark.parametrize("updater", ["sgd", "torch-sgd"])
def test_a_learning_rate_that_overflows_is_named_as_the_cause(tiny_data, tmp_path, updater):
    result = CliRunner().invoke(cli, ["run", "--seed", "1", "--data-root", str(tiny_data), "-o",
                                      "dataset.verify=false", "--epochs",
                                      "1", "--visualizer", "none", "--lr", "1e308", "--updater", updater,
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "with --lr 1e+308" in result.stderr and "this is the learning rate's doing" in result.stderr, result.stderr
    assert "report it to its authors" not in result.stderr and "fault in that component" not in result.stderr


def test_running_out_of_memory_is_named_as_the_settings_doing(fmclf_plugin, tiny_data, tmp_path):
    def greedy(*, num_inputs: int, num_classes: int):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 3840000000000 bytes. Error code 12")

    fmclf_plugin(types.SimpleNamespace(register_models=fmclf.hookimpl(lambda register: register("greedy", greedy))),
                 name="greedy-plugin")
    result = _run(tiny_data, tmp_path, "--model", "greedy")
    assert result.exit_code == 1, result.output
    assert "the memory ran out while building it, in model 'greedy'" in result.stderr, result.stderr
    assert "tried to allocate 3840000000000 bytes" in result.stderr and "--batch-size" in result.stderr
    assert "report this to its authors" not in result.stderr
