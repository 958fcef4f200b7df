"""A component's BaseException (SystemExit(0), GeneratorExit, a subclass of its own, a bare
KeyboardInterrupt with no signal behind it) is that component's fault: blamed by name, exit 1,
status.json "failed", on_exception told; in `run`, in `fit()` and in a comparison (issue 25, class 2).
The user's own Ctrl-C (fmclf's handler raises Stopped) is not."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.errors import ComponentError, Stopped
from fmclf.train.blame import blame, component_fault

KINDS = ["exit0", "exit3", "generator", "custom", "keyboard"]
RAISED = {"exit0": "SystemExit", "exit3": "SystemExit", "generator": "GeneratorExit", "custom": "Abandon",
          "keyboard": "KeyboardInterrupt"}


def _run(tiny_data, run_dir: pathlib.Path, *args: str):
    return CliRunner().invoke(cli, [
        "-p", "chaos_plugin", "run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "1",
        "--batch-size", "32", "--device", "cpu", "--seed", "1", "--visualizer", "none", "--callback", "record",
        "--out", str(run_dir), *args])


def _assert_blamed(result, run_dir: pathlib.Path, who: str, kind: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"Error: {who} (plugin 'chaos_plugin') raised {RAISED[kind]}" in result.stderr, result.stderr
    assert "This is a fault in that component" in result.stderr and "Traceback" not in result.output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    told = (run_dir / "record.events").read_text().splitlines()
    assert told[-1].startswith("exception fault ") and told[-1].endswith("ComponentError"), told


@pytest.mark.parametrize("kind", KINDS)
def test_a_models_base_exception_is_the_models_fault(tiny_data, tmp_path, kind):
    run_dir = tmp_path / "run"
    result = _run(tiny_data, run_dir, "--model", "boom-forward", "-o", "model.at_call=2", "-o", f"model.kind={kind}")
    _assert_blamed(result, run_dir, "model 'boom-forward'", kind)
    assert "on batch 2 of epoch 1" in result.stderr


@pytest.mark.parametrize("kind", ["exit0", "generator", "custom"])
def test_a_loss_calling_sys_exit_is_the_losses_fault(tiny_data, tmp_path, kind):
    run_dir = tmp_path / "run"
    result = _run(tiny_data, run_dir, "--loss", "exit-loss", "-o", f"loss.kind={kind}")
    _assert_blamed(result, run_dir, "loss 'exit-loss'", kind)
    assert not (run_dir / "model.pt").exists()


@pytest.mark.parametrize("event", ["on_fit_start", "on_epoch_end"])
@pytest.mark.parametrize("kind", ["exit0", "custom"])
def test_a_callbacks_system_exit_is_the_callbacks_fault(tiny_data, tmp_path, event, kind):
    run_dir = tmp_path / "run"
    result = _run(tiny_data, run_dir, "--callback", "exit-callback", "-o", f"callback.exit-callback.event={event}",
                  "-o", f"callback.exit-callback.kind={kind}")
    _assert_blamed(result, run_dir, "callback 'exit-callback'", kind)
    assert f"in {event}" in result.stderr


def test_a_factory_raising_system_exit_is_blamed_on_it(fmclf_plugin, tiny_data, tmp_path):
    import types

    import fmclf

    def quitter(*, num_inputs: int, num_classes: int):
        raise SystemExit(0)

    fmclf_plugin(types.SimpleNamespace(register_models=fmclf.hookimpl(lambda register: register("quitter", quitter))),
                 name="quit-plugin")
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--model", "quitter", "--epochs", "1", "--visualizer", "none", "--device", "cpu",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "model 'quitter' (plugin 'quit-plugin') failed to build: SystemExit: 0." in result.stderr


def test_the_users_own_interrupt_is_nobodys_fault():
    assert not component_fault(Stopped("SIGINT"))
    with pytest.raises(Stopped), blame("model 'm'", "on batch 1"):
        raise Stopped("SIGINT")
    with pytest.raises(ComponentError, match=r"^model 'm' raised SystemExit on batch 1: 0\."), blame("model 'm'",
                                                                                                      "on batch 1"):
        raise SystemExit(0)


@pytest.mark.parametrize("kind", ["exit0", "generator", "custom"])
def test_fit_raises_an_fmclf_error_for_a_losses_system_exit(tiny_data, kind):
    import fmclf
    from fmclf.host.loading import load_plugins, set_host

    set_host(load_plugins(include=["chaos_plugin"]))
    try:
        with pytest.raises(ComponentError, match=f"loss 'exit-loss' .*raised {RAISED[kind]}"):
            fmclf.fit(loss="exit-loss", epochs=1, batch_size=32, device="cpu", seed=1, visualizers=(), out=False,
                      options={"dataset": {"data_root": str(tiny_data), "verify": False}, "loss": {"kind": kind}})
    finally:
        set_host(None)


@pytest.mark.slow  # two runs in subprocesses
def test_compare_records_a_run_whose_loss_called_sys_exit_as_failed(tiny_data, tmp_path):
    """In a comparison only the run's exit code matters: 1, so the run is failed, not finished."""
    from helpers import run_fmclf

    tests = pathlib.Path(__file__).parents[1]
    out = tmp_path / "cmp"
    result = run_fmclf("-p", "chaos_plugin", "compare", "--loss", "fused", "--loss", "exit-loss", "--seeds", "1",
                       "--jobs", "2", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size",
                       "32", "--device", "cpu", "--epochs", "1", "--visualizer", "none", "--out", str(out),
                       env={"PYTHONPATH": str(tests)})
    assert "failed (exit 1): loss 'exit-loss' (plugin 'chaos_plugin') raised SystemExit" in result.stdout
    rows = {r["components"]["loss"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert rows["exit-loss"]["failed"] == 1 and rows["fused"]["failed"] == 0
    status = json.loads((out / "runs" / "scratch-exit-loss-sgd-fashion-mnist-seed0" / "status.json").read_text())
    assert status["status"] == "failed"


def test_a_models_system_exit_while_the_pictures_are_drawn_is_a_warning_not_an_exit(tiny_data, tmp_path):
    """After training the model is called once more, for predictions.png: its sys.exit(0) there costs
    the picture (a warning), not the run's exit code or its files."""
    run_dir = tmp_path / "run"
    batches = 96 // 32 + 40 // 32 + 1  # every training and test forward of one epoch
    result = _run(tiny_data, run_dir, "--model", "boom-forward", "-o", f"model.at_call={batches + 1}",
                  "-o", "model.kind=exit0")
    assert result.exit_code == 0, result.output
    assert "Warning: could not draw the run's pictures (SystemExit" in result.output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
