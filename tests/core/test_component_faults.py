"""An exception raised inside a plugin's component names the component and the
plugin it came from, with no traceback from deep inside torch."""

from __future__ import annotations

import pathlib
import traceback

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

FAULTS = [
    (["--model", "boom-build"],
     "Error: model 'boom-build' (plugin 'chaos_plugin') failed to build: RuntimeError: no GPU kernels for this model."),
    (["--model", "boom-forward", "-o", "model.at_call=3"],
     "Error: model 'boom-forward' (plugin 'chaos_plugin') raised ValueError on batch 3 of epoch 1: matrix shapes went "
     "wrong inside the model."),
    (["--model", "boom-forward", "-o", "model.at_call=4"],  # 3 training batches, then the test set
     "Error: model 'boom-forward' (plugin 'chaos_plugin') raised ValueError while evaluating on the test set: matrix "
     "shapes went wrong"),
    (["--loss", "boom"],
     "Error: loss 'boom' (plugin 'chaos_plugin') raised ZeroDivisionError on batch 1 of epoch 1: division by zero in "
     "the loss."),
    (["--updater", "boom-step"],
     "Error: updater 'boom-step' (plugin 'chaos_plugin') raised RuntimeError while updating on batch 1 of epoch 1: the "
     "optimizer state is on another device."),
    (["--visualizer", "boom-epoch-end"],
     "Error: visualizer 'boom-epoch-end' (plugin 'chaos_plugin') raised KeyError in on_epoch_end: 'no such column in "
     "the plot'."),
    (["--dataset", "flaky-data", "-o", "dataset.fail_at=2"],
     "Error: dataset 'flaky-data' (plugin 'chaos_plugin') raised OSError while yielding training batches in epoch 1: "
     "lost the connection to the data server."),
]


@pytest.mark.parametrize("args,start", FAULTS, ids=[a[1] for a, _ in FAULTS])
def test_a_component_fault_names_the_component_and_its_plugin(tiny_data, tmp_path, args, start):
    data = ["-o", f"dataset.data_root={tiny_data}"] + ([] if "flaky-data" in args else ["-o", "dataset.verify=false"])
    result = CliRunner().invoke(
        cli, ["-p", "chaos_plugin", "run", "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--seed", "1",
              *(["--visualizer", "none"] if "--visualizer" not in args else []), *data, *args,
              "--out", str(tmp_path / "run")],
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(start), result.stderr
    assert ("This is a fault in that component; report it to its authors" in result.stderr
            or "report this to its authors" in result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if "boom-epoch-end" in args:  # it failed after epoch 1 was saved: the user is told so
        assert "keeps its last good checkpoint (after epoch 1)" in result.stderr
        assert f"`fmclf run --resume {tmp_path / 'run'}` continues from it" in result.stderr


def test_a_run_whose_visualizer_failed_resumes_without_it(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    args = ["-p", "chaos_plugin", "run", "--epochs", "2", "--device", "cpu", "--data-root", str(tiny_data),
            "-o", "dataset.verify=false", "--visualizer", "boom-epoch-end", "--seed", "1", "--out", str(run_dir)]
    assert CliRunner().invoke(cli, args).exit_code == 1
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--visualizer", "none"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {run_dir} at epoch 2 of 2" in resumed.output


def test_debug_mode_shows_the_components_own_traceback(tiny_data, tmp_path, monkeypatch):
    """FMCLF_DEBUG=1: the original exception is chained under the message, for the plugin's author."""
    monkeypatch.setenv("FMCLF_DEBUG", "1")
    result = CliRunner().invoke(
        cli, ["-p", "chaos_plugin", "run", "--loss", "boom", "--epochs", "1", "--device", "cpu", "--visualizer", "none",
              "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--seed", "1",
              "--out", str(tmp_path / "run")],
    )
    cause = result.exception.__cause__
    assert isinstance(cause, ZeroDivisionError)
    assert pathlib.Path(traceback.extract_tb(cause.__traceback__)[-1].filename).name == "chaos_plugin.py"


def test_a_failing_backward_names_the_loss_and_the_model_not_the_updater(fmclf_plugin, tiny_data, tmp_path):
    """The gradients run back through the loss and the model; the updater is innocent."""
    import types

    import torch

    import fmclf

    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, y):
            return logits.sum(dim=1) * 0

        @staticmethod
        def backward(ctx, g):
            raise ArithmeticError("no gradient today")

    plugin = types.SimpleNamespace(
        register_losses=fmclf.hookimpl(lambda register: register("broken-grad", lambda: Broken.apply)))
    fmclf_plugin(plugin, name="grad-plugin")
    from click.testing import CliRunner

    from fmclf.cli import cli

    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--loss", "broken-grad", "--epochs", "1", "--batch-size", "16", "--seed", "1",
                                      "--visualizer", "none", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "computing gradients raised ArithmeticError on batch 1 of epoch 1: no gradient today" in result.output
    assert "loss 'broken-grad'" in result.output and "model 'scratch'" in result.output
    assert "updater" not in result.output.split("Error:", 1)[1]
