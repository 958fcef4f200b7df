"""A callback's state that passes the type check but cannot be saved, or read back as --resume reads
it, is refused when it is saved, blamed on the callback by name, before a checkpoint --resume would
refuse is written (issue 25, class 5)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

STATES = {
    "intenum": "IntEnum",  # an int to the type check; weights_only refuses the class
    "lambda": "defaultdict",  # a dict to the type check; pickle cannot save the lambda
    "subclass": "tensor subclass",  # a tensor to the type check; weights_only refuses the class
    "deep": "RecursionError",  # too deep for pickle
}


@pytest.mark.parametrize("state", [*STATES, "huge"])
def test_a_callback_state_that_cannot_make_the_round_trip_is_the_callbacks_fault(tiny_data, tmp_path, state):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "-p", "chaos_plugin", "run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--epochs", "2",
        "--batch-size", "32", "--device", "cpu", "--seed", "1", "--visualizer", "none", "--callback", "odd-state",
        "-o", f"callback.odd-state.state={state}", "--out", str(run_dir)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: callback 'odd-state' (plugin 'chaos_plugin'): the state its "
                                    "state_dict() returned"), result.stderr
    assert ("more than the 64 MiB" if state == "huge" else "cannot be saved in a checkpoint and read back") \
        in result.stderr
    assert "Traceback" not in result.output
    assert not (run_dir / "checkpoint.pt").exists()  # none that --resume would refuse
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def test_a_plain_state_still_round_trips_and_resumes(tiny_data, tmp_path):
    """The built-in early-stop keeps plain numbers: saved, read back, resumed."""
    run_dir = tmp_path / "run"
    base = ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "--batch-size", "32", "--device", "cpu",
            "--visualizer", "none", "--seed", "0"]
    first = CliRunner().invoke(cli, [*base, "--epochs", "1", "--callback", "early-stop", "-o", "dataset.valid=0.2",
                                     "--out", str(run_dir)])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["run", "--resume", str(run_dir), "--epochs", "2"])
    assert again.exit_code == 0, again.output


def test_round_trip_refuses_what_weights_only_cannot_read(tmp_path):
    import enum

    from fmclf.errors import ComponentError
    from fmclf.run.checkpoint import round_trip

    class Level(enum.IntEnum):
        LOW = 0

    round_trip("callback 'x'", {"n": 1, "best": 0.5, "names": ["a"]})
    with pytest.raises(ComponentError, match=r"^callback 'x': the state .* cannot be saved"):
        round_trip("callback 'x'", {"level": Level.LOW})
