"""--prune halving: the rungs, the promotions (on fixed numbers), and a tuned comparison whose trials are
halved on their checkpoints, continued after Ctrl-C without training anything twice."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner
from test_compare_runs import TESTS, tiny

from fmclf.cli import cli
from fmclf.compare import halving


def compare(*args: str, plugins: tuple[str, ...] = ()):
    flags = [a for p in plugins for a in ("-p", p)]
    return CliRunner().invoke(cli, [*flags, "compare", *args], catch_exceptions=False)


@pytest.mark.parametrize(("trials", "epochs", "ladder"), [
    (8, 10, [(1, 8, 4), (2, 4, 2), (5, 2, 1), (10, 1, 1)]),
    (4, 4, [(1, 4, 2), (2, 2, 1), (4, 1, 1)]),
    (8, 3, [(1, 8, 4), (3, 4, 4)]),  # as many rungs as the epochs allow: the last keeps its trials
    (6, 30, [(7, 6, 3), (15, 3, 1), (30, 1, 1)]),
    (1, 10, [(10, 1, 1)]),  # one trial: nothing to halve
    (5, 1, [(1, 5, 5)]),
])
def test_rungs(trials, epochs, ladder):
    assert [(r.epochs, r.trials, r.keep) for r in halving.rungs(trials, epochs)] == ladder


def test_the_better_half_is_promoted_ties_to_the_lower_number_a_failed_trial_last():
    values = {0: 0.5, 1: 0.7, 2: None, 3: 0.7, 4: 0.6}
    assert halving.promoted(values, 2, maximize=True) == [1, 3]
    assert halving.promoted(values, 2, maximize=False) == [0, 4]
    assert halving.promoted({0: None, 1: 0.1}, 2, maximize=True) == [0, 1]


def metric_epochs(run: pathlib.Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # eight tiny trials through three rungs, stopped twice
def test_halved_trials_resume_from_their_checkpoints_and_ctrl_c_trains_nothing_twice(tiny_data, tmp_path,
                                                                                      monkeypatch):
    """4 trials to 4 epochs in one cell: rungs of 1, 2 and 4 epochs. A signal in epoch 2 stops the comparison
    while the promoted trials resume; each rerun continues, and no epoch of any trial is trained twice."""
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "halved"
    args = ["--updater", "torch-sgd", "--tune", "lr=log:0.01..1", "--trials", "4", "--prune", "halving",
            "--seeds", "1", *tiny(tiny_data, epochs=4), "--no-batch", "--out", str(out),
            "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=2"]
    stopped = compare(*args, plugins=("chaos_plugin",))
    assert stopped.exit_code == 130, stopped.output
    assert "by successive halving: 4 to 1 epoch(s), 2 to 2 epoch(s), 1 to 4 epoch(s)" in stopped.output
    trials = {p.name: p for p in (out / "runs").iterdir()}
    assert len(trials) == 4 and all(metric_epochs(p)[0] == 1 for p in trials.values())
    rung0 = {name: (p / "metrics.jsonl").read_text() for name, p in trials.items()}
    for _ in range(4):  # each rerun resumes the stopped trial past its signal; a trial that reaches it stops
        again = compare(*args, plugins=("chaos_plugin",))
        assert again.exit_code in (0, 130), again.output
        if again.exit_code == 0:
            break
    assert again.exit_code == 0, again.output
    doc = json.loads((out / "compare.json").read_text())
    assert doc["protocol"]["prune"] == "halving"
    assert doc["protocol"]["rungs"] == [{"epochs": 1, "trials": 4, "promoted": 2},
                                        {"epochs": 2, "trials": 2, "promoted": 1},
                                        {"epochs": 4, "trials": 1, "promoted": 1}]
    (cell,) = doc["protocol"]["cells"].values()
    states = sorted((t["state"], t.get("pruned_at")) for t in cell["trials"])
    assert states == [("complete", None), ("pruned", 1), ("pruned", 1), ("pruned", 2)]
    for t in cell["trials"]:
        run = out / t["run"]
        reached = t.get("pruned_at") or 4
        assert metric_epochs(run) == list(range(1, reached + 1))  # every epoch once: nothing trained twice
        assert (run / "metrics.jsonl").read_text().startswith(rung0[run.name])
        assert list(t["rungs"]) == [str(e) for e in (1, 2, 4) if e <= reached]
    winner = next(t for t in cell["trials"] if t["state"] == "complete")
    assert cell["chosen"] == winner["params"] and winner["value"] == winner["rungs"]["4"]
    stamps = {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    last = compare(*args, plugins=("chaos_plugin",))
    assert last.exit_code == 0 and "trial(s) to train" not in last.output.replace("0 trial(s) to train", "")
    assert {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == stamps


def test_a_dry_run_shows_the_rungs_and_seeds_auto_and_writes_nothing(tiny_data, tmp_path):
    out = tmp_path / "dry"
    result = compare("--tune", "lr=log:0.01..1", "--trials", "8", "--prune", "halving", "--seeds", "auto:9",
                     *tiny(tiny_data, epochs=10), "--out", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    assert ("successive halving: 8 trial(s) to 1 epoch(s), 4 trial(s) to 2 epoch(s), 2 trial(s) to 5 epoch(s), "
            "1 trial(s) to 10 epoch(s)") in result.output
    assert "1 cell(s) x 5 seed(s)" in result.output and "up to 9" in result.output
    assert not out.exists()
