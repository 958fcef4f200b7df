"""Blame looks at where a tensor came from (its dtype, shape, gradient) before naming a component: the
built-in that trips over a bad tensor is not blamed for it (issue 25, class 6)."""

from __future__ import annotations

import types

import pytest
from click.testing import CliRunner

import fmclf
from fmclf.cli import cli
from fmclf.errors import DataError

from helpers import write_tiny_fashion


def _run(tiny_data, tmp_path, *args: str, plugin: str | None = "chaos_plugin"):
    data = ["--data-root", str(tiny_data), "-o", "dataset.verify=false"] if tiny_data is not None else []
    return CliRunner().invoke(cli, [
        *(["-p", plugin] if plugin else []), "run", *data,
        "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--seed", "1", "--visualizer", "none",
        "--out", str(tmp_path / "run"), *args])


def _blamed(result, who: str, *innocent: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error = result.stderr.split("Error:", 1)[1]
    assert error.lstrip().startswith(who), result.stderr
    for name in innocent:
        assert name not in error, result.stderr
    return error


# --- the model's output ----------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_int64_logits_are_the_models_fault(tiny_data, tmp_path, loss):
    error = _blamed(_run(tiny_data, tmp_path, "--model", "boom-forward", "-o", "model.kind=int", "--loss", loss),
                    "model 'boom-forward'",
                    f"loss '{loss}'")
    assert "returned logits of dtype torch.int64" in error


@pytest.mark.parametrize("updater", ["sgd", "torch-sgd"])
def test_a_model_without_parameters_is_the_models_fault(tiny_data, tmp_path, updater):
    error = _blamed(_run(tiny_data, tmp_path, "--model", "no-params", "--updater", updater), "model 'no-params'")
    assert "has no trainable parameters" in error and "This is the model's doing" in error


def test_a_model_whose_parameters_are_all_frozen_is_the_models_fault(fmclf_plugin, tiny_data, tmp_path):
    def frozen(*, num_inputs: int, num_classes: int):
        import torch

        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(num_inputs, num_classes))
        net.requires_grad_(False)
        return net

    fmclf_plugin(types.SimpleNamespace(register_models=fmclf.hookimpl(lambda register: register("frozen", frozen))),
                 name="frozen-plugin")
    _blamed(_run(tiny_data, tmp_path, "--model", "frozen", "--updater", "torch-sgd", plugin=None), "model 'frozen'")


@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_nan_logits_are_said_to_come_from_the_model_and_fused_is_not_advised(tiny_data, tmp_path, loss):
    result = _run(tiny_data, tmp_path, "--model", "boom-forward", "-o", "model.at_call=2", "-o", "model.kind=nan",
                  "--loss", loss)
    assert result.exit_code == 1, result.output
    assert "training diverged" in result.stderr
    assert "The logits of model 'boom-forward' (plugin 'chaos_plugin') were already inf or nan" in result.stderr
    assert "--loss fused" not in result.stderr


def test_the_fused_losses_own_hint_does_not_advise_itself(tiny_data, tmp_path):
    """A divergence the loss watch finds with fused (here: the weights poisoned by the updater): fused's own
    divergence_hint, not the core's advice to try fused."""
    result = _run(tiny_data, tmp_path, "--updater", "poison", "-o", "updater.at_step=1", "--loss", "fused")
    assert result.exit_code == 1, result.output
    assert "diverged" in result.stderr and "--loss fused" not in result.stderr


# --- the loss's output ------------------------------------------------------------------------------------

def test_a_detached_loss_is_the_losses_fault_alone(tiny_data, tmp_path):
    error = _blamed(_run(tiny_data, tmp_path, "--loss", "detached"), "loss 'detached'", "model 'scratch'", "sgd")
    assert "does not require grad" in error


def test_a_detached_loss_with_a_torch_optimizer_is_the_losses_fault_alone(tiny_data, tmp_path):
    _blamed(_run(tiny_data, tmp_path, "--loss", "detached", "--model", "nn", "--updater", "torch-sgd"),
            "loss 'detached'", "model 'nn'", "torch-sgd")


# --- the data set's tensors -------------------------------------------------------------------------------

def _small_test_images(tmp_path):
    data = write_tiny_fashion(tmp_path / "mixed")
    small = write_tiny_fashion(tmp_path / "small", side=14)
    (data / "t10k-images-idx3-ubyte").write_bytes((small / "t10k-images-idx3-ubyte").read_bytes())
    return data


@pytest.mark.parametrize("model,loss", [("scratch", "fused"), ("nn", "fused"), ("scratch", "naive")])
def test_test_images_of_another_size_are_the_data_sets_fault_before_training(tmp_path, model, loss):
    result = _run(_small_test_images(tmp_path), tmp_path, "--model", model, "--loss", loss, plugin=None)
    error = _blamed(result, "dataset 'fashion-mnist'", f"loss '{loss}'", f"model '{model}'")
    assert "gave test examples of shape (1, 14, 14) (196 values each)" in error
    assert "epoch 1/1" not in result.output  # refused before a full epoch


def _plain_split_data(*, valid_side: int = 28, train_labels_float: bool = False):
    """A plugin data set 'plain' with a valid split yielded by a plain iterable (no .X to look at)."""

    def plain(*, batch_size: int, device, seed: int = 0):
        import torch

        from fmclf.data import InMemoryDataset, TensorBatches

        g = torch.Generator().manual_seed(0)
        X, y = torch.rand(64, 1, 28, 28, generator=g), torch.arange(64) % 10
        Xv = torch.rand(64, 1, valid_side, valid_side, generator=g)
        train = TensorBatches(X, y.float() if train_labels_float else y, batch_size, shuffle=False)

        class Plain:
            def __len__(self):
                return 4

            def __iter__(self):
                return iter([(Xv[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]) for i in range(4)])

        data = InMemoryDataset(train, TensorBatches(X, y, batch_size, shuffle=False), [str(i) for i in range(10)],
                               (1, 28, 28), "made up")
        data.valid = Plain()
        return data

    return types.SimpleNamespace(register_datasets=fmclf.hookimpl(lambda register: register("plain", plain)))


def test_a_valid_split_of_another_size_yielded_by_a_generator_is_the_data_sets_fault(fmclf_plugin, tmp_path):
    fmclf_plugin(_plain_split_data(valid_side=14), name="plain-plugin")
    error = _blamed(_run(None, tmp_path, "--dataset", "plain", plugin=None), "dataset 'plain'", "model 'scratch'",
                    "loss 'fused'")
    assert "gave valid examples of shape (1, 14, 14)" in error


def test_one_dimensional_float_labels_of_a_plugin_are_the_data_sets_fault(fmclf_plugin, tmp_path):
    fmclf_plugin(_plain_split_data(train_labels_float=True), name="plain-plugin")
    error = _blamed(_run(None, tmp_path, "--dataset", "plain", plugin=None), "dataset 'plain'", "fused")
    assert "training labels of dtype torch.float32 with one dimension" in error


@pytest.mark.parametrize("loss", ["fused", "naive"])
def test_fit_with_one_dimensional_float_labels_blames_the_labels(loss):
    import torch

    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(16, 1, 28, 28, generator=g), (torch.arange(16) % 10).float()) for _ in range(3)]
    with pytest.raises(DataError, match=r"training labels of dtype torch.float32 with one dimension.*y\.long\(\)"):
        fmclf.fit(model="nn", loss=loss, dataset=(batches, batches), epochs=1, device="cpu", seed=0, visualizers=(),
                  out=False)
