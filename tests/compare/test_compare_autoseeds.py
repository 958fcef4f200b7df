"""--seeds auto: the rule that adds seeds to a cell until its difference from the best is resolved (on fixed
numbers), its parsing, and a comparison that grows to the cap and then, run again, trains nothing."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.compare import autoseeds, results
from fmclf.compare.grid import Cell
from fmclf.compare.jobs import FINISHED, Run
from fmclf.errors import UsageError
from fmclf.run.config import RunConfig


def cell(loss: str) -> Cell:
    return Cell({"loss": loss}, {}, RunConfig(loss=loss))


def ranked(tmp_path: pathlib.Path, values: dict[str, list[float]]) -> list[results.CellResult]:
    """Cells whose runs (seed = position) end with these test accuracies, ranked."""
    cells, runs = [cell(name) for name in values], []
    for c in cells:
        for seed, value in enumerate(values[c.components["loss"]]):
            run = Run(c, seed, c.config, tmp_path, state=FINISHED)
            run.run_dir.mkdir(parents=True)
            row = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_acc": value, "seconds": 0.1}
            (run.run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
            runs.append(run)
    found = results.collect(cells, runs)
    return results.rank(found, results.Ranking.parse(None, results.metric_names(found)))


def test_parse():
    assert autoseeds.parse("7") == (7, None)
    assert autoseeds.parse("auto") == (5, autoseeds.AutoSeeds(cap=20, start=5))
    assert autoseeds.parse("auto:12") == (5, autoseeds.AutoSeeds(cap=12, start=5))
    assert autoseeds.parse("auto:3") == (3, autoseeds.AutoSeeds(cap=3, start=3))  # a cap below 5 starts there
    for bad in ("auto:1", "auto:x", "many", "-2", "auto:5000"):
        with pytest.raises(UsageError):
            autoseeds.parse(bad)


def test_grow_adds_half_as_many_again_up_to_the_cap():
    rule = autoseeds.AutoSeeds(cap=20)
    assert [rule.grow(n) for n in (2, 5, 7, 10, 16, 19)] == [4, 7, 10, 15, 20, 20]


def test_a_resolved_cell_stops_an_unresolved_one_gets_more_and_the_best_keeps_up(tmp_path):
    rule = autoseeds.AutoSeeds(cap=10)
    best = [0.80, 0.81, 0.82, 0.80, 0.81]
    far = [v - 0.05 + 0.001 * i for i, v in enumerate(best)]  # 5 points worse on every seed: resolved
    near = [v + d for v, d in zip(best, (0.01, -0.012, 0.009, -0.011, 0.002))]  # within noise
    found = ranked(tmp_path, {"best": best, "far": far, "near": near})
    assert [r.cell.name for r in found][0] == "best"
    decision = autoseeds.decide(rule, found, {"best": 5, "far": 5, "near": 5})
    assert decision.counts == {"best": 7, "far": 5, "near": 7}
    assert decision.stopped == {"far": autoseeds.RESOLVED} and not decision.done


def test_at_the_cap_an_unresolved_cell_stops_and_so_does_the_best(tmp_path):
    rule = autoseeds.AutoSeeds(cap=5)
    found = ranked(tmp_path, {"a": [0.8, 0.81, 0.82, 0.8, 0.81], "b": [0.81, 0.8, 0.82, 0.81, 0.8]})
    decision = autoseeds.decide(rule, found, {"a": 5, "b": 5})
    assert decision.done and decision.counts == {"a": 5, "b": 5}
    assert sorted(decision.stopped.values()) == [autoseeds.BEST, autoseeds.CAP]


def test_one_cell_is_done_at_once(tmp_path):
    decision = autoseeds.decide(autoseeds.AutoSeeds(), ranked(tmp_path, {"a": [0.8, 0.9]}), {"a": 2})
    assert decision.done and decision.stopped == {"a": autoseeds.BEST}


def test_bad_seeds_are_refused_in_one_paragraph(tiny_data, tmp_path):
    result = CliRunner().invoke(cli, ["compare", "--seeds", "lots", "--data-root", str(tiny_data), "--out",
                                      str(tmp_path / "c")])
    assert result.exit_code == 2 and "--seeds 'lots' is neither a number nor auto" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c").exists()


def test_identical_cells_grow_to_the_cap_and_the_same_command_trains_nothing(tiny_data, tmp_path):
    """On pixels in [0, 1] the naive and the fused loss give the same numbers: the difference is 0 on every
    seed, never resolved, so both cells go from 5 seeds to the cap of 7 and stop there."""
    out = tmp_path / "auto"
    args = ["compare", "--loss", "naive", "--loss", "fused", "--seeds", "auto:7", "--data-root", str(tiny_data),
            "-o", "dataset.verify=false", "--batch-size", "32", "--device", "cpu", "--epochs", "1",
            "--out", str(out)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "--seeds auto: not resolved yet, so more seeds for" in first.output
    doc = json.loads((out / "compare.json").read_text())
    auto = doc["seeds_auto"]
    assert auto["cap"] == 7 and auto["start"] == 5
    assert auto["rounds"] == [{"scratch-naive-sgd-fashion-mnist": 5, "scratch-fused-sgd-fashion-mnist": 5},
                              {"scratch-naive-sgd-fashion-mnist": 7, "scratch-fused-sgd-fashion-mnist": 7}]
    assert sorted((c["seeds"], c["stopped"]) for c in auto["cells"].values()) == [(7, "best"), (7, "cap")]
    assert doc["seeds"] == list(range(7)) and all(row["seeds"] == list(range(7)) for row in doc["rows"])
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and again.output.count("nothing to train") == 2, again.output
