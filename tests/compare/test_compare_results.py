"""From run folders to compare.json and compare.md: every numeric metric read generically,
the ranking, the paired comparison with the best cell and what the table says of it."""

from __future__ import annotations

import json
import math
import pathlib
import statistics

import pytest

from fmclf.compare import markdown, results
from fmclf.compare.grid import Cell
from fmclf.compare.jobs import FAILED, FINISHED, NEW, Run
from fmclf.compare.stats import t_quantile
from fmclf.run.config import RunConfig


def cell(loss: str) -> Cell:
    return Cell({"model": "nn", "loss": loss}, {}, RunConfig(model="nn", loss=loss))


def finished(root: pathlib.Path, c: Cell, seed: int, rows: list[dict]) -> Run:
    """A run whose folder holds ``rows`` as metrics.jsonl."""
    run = Run(c, seed, c.config, root, state=FINISHED)
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def rows(loss: float, ece: float, seconds: float = 0.2) -> list[dict]:
    """Two epochs; the last carries the values, plus keys that are not metrics. Accuracies are the
    same for every run (a run folder's rows always hold them)."""
    return [{"epoch": 1, "train_loss": loss + 1, "train_acc": 0.5, "test_acc": 0.5, "test_ece": ece + 0.1,
             "seconds": seconds, "per_class_test_acc": {"a": 1.0}},
            {"epoch": 2, "train_loss": loss, "train_acc": 0.6, "test_acc": 0.6, "test_ece": ece, "seconds": seconds * 2,
             "per_class_test_acc": {"a": 1.0}, "flag": True}]


@pytest.fixture
def comparison(tmp_path):
    a, b, c = cell("a"), cell("b"), cell("c")
    runs = [finished(tmp_path, a, s, rows(0.50 + 0.01 * s, 0.05)) for s in range(3)]
    runs += [finished(tmp_path, b, s, rows(0.40 + 0.01 * s + (0.004 if s == 1 else 0), 0.07)) for s in range(3)]
    runs += [Run(c, s, c.config, tmp_path, state=FAILED, reason="training diverged: the loss became inf", diverged=True)
             for s in range(2)] + [Run(c, 2, c.config, tmp_path, state=NEW)]
    return tmp_path, [a, b, c], runs


def test_every_numeric_key_of_the_last_epoch_is_a_metric(comparison):
    _, cells, runs = comparison
    found = results.collect(cells, runs)
    # not epoch, seconds, a dict or a bool
    assert results.metric_names(found) == ["train_loss", "train_acc", "test_acc", "test_ece"]
    assert found[0].values["train_loss"] == {0: 0.50, 1: 0.51, 2: 0.52}
    assert found[0].epoch_seconds[0] == pytest.approx(0.3)  # the mean of 0.2 and 0.4
    assert found[2].values == {} and len(found[2].failed) == 2 and len(found[2].missing) == 1


def test_ranking_lower_is_better_for_a_loss_and_the_paired_comparison_by_hand(comparison):
    root, cells, runs = comparison
    ranking = results.Ranking.parse("train_loss", ["train_loss"])
    assert ranking.higher_is_better is False
    ranked = results.rank(results.collect(cells, runs), ranking)
    assert [r.cell.components["loss"] for r in ranked] == ["b", "a", "c"]  # no finished run: last
    p = ranked[1].vs_best
    diffs = [0.10, 0.10 - 0.004, 0.10]  # a - b on seeds 0, 1, 2
    assert p.n == 3 and p.mean_diff == pytest.approx(statistics.fmean(diffs))
    assert p.ci95 == pytest.approx(t_quantile(0.975, 2) * statistics.stdev(diffs) / math.sqrt(3))
    assert p.beyond_noise is True  # 0.0987 ± 0.0057
    assert ranked[0].vs_best is None and ranked[2].vs_best is None

    doc = results.to_json(ranked, ranking, root=root, seeds=[0, 1, 2], extra={"epochs": 2})
    assert doc["complete"] is False and doc["rank_by"] == "train_loss" and doc["axes"] == ["loss"]
    first, second, third = doc["rows"]
    assert first["metrics"]["train_loss"]["values"] == pytest.approx([0.40, 0.414, 0.42], abs=1e-15)
    assert first["metrics"]["train_loss"]["mean"] == pytest.approx(statistics.fmean([0.40, 0.414, 0.42]))
    assert second["vs_best"]["beyond_noise"] is True and second["runs"]["1"] == "runs/nn-a-seed1"
    assert third["failed"] == 2 and third["missing"] == [2] and third["seeds"] == []
    assert third["failures"][0] == {"seed": 0, "reason": "training diverged: the loss became inf", "diverged": True,
                                    "run": "runs/nn-c-seed0"}

    md = markdown.render(ranked, ranking, seeds=[0, 1, 2], epochs=2, root=root)
    lines = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert "| best |" in lines["b"]
    assert f"{p.mean_diff:+.4f} ± {p.ci95:.4f}, p = {p.p:.2g}: beyond noise" in lines["a"]
    assert "0 of 3; diverged in 2 of 3 seeds; 1 not trained yet" in lines["c"]
    assert "**Incomplete**: 1 run(s) not trained yet" in md
    assert "- `runs/nn-c-seed1`: training diverged: the loss became inf" in md


def test_by_default_test_acc_ranks_and_higher_is_better():
    assert results.Ranking.parse(None, ["train_loss", "test_acc"]) == results.Ranking("test_acc", True)
    assert results.Ranking.parse(None, ["valid_ece"]) == results.Ranking("valid_ece", False)
    assert results.Ranking.parse("test_loss:max", []) == results.Ranking("test_loss", True)
    with pytest.raises(Exception, match="METRIC:max or METRIC:min"):
        results.Ranking.parse("test_acc:up", [])


def test_within_noise_and_one_shared_seed_are_said_so():
    from fmclf.compare.stats import paired

    assert markdown.verdict(paired({0: 1.0, 1: 2.0, 2: 1.4}, {0: 1.1, 1: 1.8, 2: 1.5}),
                            best=False).endswith("within noise")
    assert markdown.verdict(paired({0: 1.0}, {0: 1.1}), best=False) == "-0.1000 (1 shared seed: cannot tell)"


def test_the_failures_that_make_compare_exit_1(comparison):
    """A reported run that failed or diverged counts; a diverged trial is an answer of the search and does
    not; a trial that failed otherwise does, and so does a cell whose trials all ended without a value."""
    from fmclf.compare.comparison import failures

    _, _, runs = comparison
    assert failures(runs, None) == ["nn-c-seed0: training diverged: the loss became inf",
                                    "nn-c-seed1: training diverged: the loss became inf"]
    finished_only = [r for r in runs if r.state != FAILED]
    tuned = {
        "x": {"chosen": {"lr": 0.1}, "trials": [
            {"number": 0, "state": "fail", "reason": "training diverged: the loss became nan", "diverged": True},
            {"number": 1, "state": "complete", "value": 0.8}]},
        "y": {"chosen": None, "trials": [
            {"number": 0, "state": "fail", "reason": "loss 'boom' raised ZeroDivisionError", "diverged": False},
            {"number": 1, "state": "fail", "reason": "training diverged: the loss became nan", "diverged": True}]},
        "z": {"chosen": None, "trials": [{"number": 0, "state": "running"}]},  # not ended: not a failure yet
    }
    assert failures(finished_only, tuned) == ["y-trial0: loss 'boom' raised ZeroDivisionError",
                                              "y: every trial failed, so it has no configuration to report"]
