"""The defects of issue 19 (tracker 22), each reproduced: a repeated flag, unbounded counts, a dry run
that trained, two writers on one folder, a run cut short counted finished, a signal a run absorbed,
torch's global state leaking from one in-process run to the next, test used to choose."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal

import pytest
from click.testing import CliRunner
from test_compare_runs import tiny

from fmclf.cli import cli
from fmclf.compare import results
from fmclf.compare.executor import Call, InProcessExecutor, Job
from fmclf.errors import Interrupted
from fmclf.run import folder, lock

from picture_checks import assert_picture


def compare(*args: str):
    return CliRunner().invoke(cli, ["compare", *args], catch_exceptions=False)


def test_a_repeated_lr_is_an_axis_and_a_repeated_setting_that_cannot_be_one_is_an_error(tiny_data, tmp_path):
    out = tmp_path / "lr"
    grid = compare("--lr", "0.1", "--lr", "0.01", "--updater", "sgd", "--updater", "torch-sgd", "--seeds", "1",
                   *tiny(tiny_data), "--out", str(out), "--dry-run")
    assert grid.exit_code == 0, grid.output
    assert "4 cell(s) x 1 seed(s)" in grid.output
    for name in ("scratch-fused-sgd-fashion-mnist-lr=0.1", "scratch-fused-torch-sgd-fashion-mnist-lr=0.01"):
        assert name in grid.output
    assert "--lr 0.01 --seed 0" in grid.output and "--lr 0.1 --seed 0" in grid.output
    for flags, flag in ((["--epochs", "2", "--epochs", "3"], "--epochs"), (["--seeds", "2", "--seeds", "3"], "--seeds"),
                        (["--device", "cpu", "--device", "cuda"], "--device"),
                        (["--out", str(tmp_path / "other")], "--out"),
                        (["--executor", "local", "--executor", "ray"], "--executor"),
                        (["--config", "a.toml", "--config", "b.toml"], "--config")):
        result = compare("--data-root", str(tiny_data), *flags, "--out", str(out))
        assert result.exit_code == 2, result.output
        assert f"{flag} is given 2 times" in result.output and "it takes one value" in result.output
        assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(("flags", "text"), [
    (["--seeds", "1000000000"], "--seeds 1000000000 is more than this command takes (1000)"),
    (["--jobs", "100000"], "--jobs 100000 is more than this command takes (256)"),
    (["--tune", "lr=log:0.01..1", "--trials", "5000"], "--trials 5000 is more than this command takes (1000)"),
    (["--trials", "0", "--tune", "lr=0.1,0.2"], "--trials must be at least 1"),
])
def test_every_count_is_bounded(tiny_data, tmp_path, flags, text):
    result = compare(*flags, *tiny(tiny_data), "--out", str(tmp_path / "big"))
    assert result.exit_code == 2 and text in result.output, result.output
    assert not (tmp_path / "big").exists()


def test_dry_run_prints_the_grid_and_touches_nothing(tiny_data, tmp_path):
    out = tmp_path / "dry"
    result = compare("--model", "scratch", "--model", "nn", "--tune", "lr=log:0.01..1", "--trials", "3", "--seeds", "2",
                     *tiny(tiny_data), "--out", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing is trained or written" in result.output
    assert "tuning: 3 trial(s) per cell over lr log:0.01..1" in result.output
    assert result.output.count("[new] fmclf run ") == 6  # 2 cells x 3 trials, each with its command
    assert "--seed 1000 " in result.output and "--seed 1002 " in result.output  # trial seeds, past every --seeds
    assert "nn-fused-sgd-fashion-mnist-seed1: the cell's best trial's configuration with --seed 1" in result.output
    assert not out.exists()


def test_a_dry_runs_commands_carry_every_setting_the_runs_are_given(tiny_data, tmp_path):
    """Each command shown repeats its run: the metrics and callbacks too, and the settings left unset by default."""
    result = compare("--metric", "ece", "--callback", "best", "--threads", "1", "--no-cuda-graphs", "--seeds", "1",
                     *tiny(tiny_data), "--out", str(tmp_path / "dry"), "--dry-run")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "[new] fmclf run " in line)
    for flag in ("--metric ece", "--callback best", "--threads 1", "--no-cuda-graphs", "--epochs 2", "--seed 0"):
        assert flag in line, line


def test_a_second_comparison_on_the_same_folder_is_refused_naming_the_holder(tiny_data, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    held = lock.RunLock(out)
    held.acquire()
    try:
        result = compare(*tiny(tiny_data), "--seeds", "1", "--out", str(out))
    finally:
        held.release()
    assert result.exit_code == 2, result.output
    assert f"is in use by another fmclf compare (process {os.getpid()}" in result.output
    assert not (out / "runs").exists()


def test_a_run_cut_short_after_its_summary_is_resumed_not_counted_finished(tiny_data, tmp_path):
    """The run of the issue was stopped while it drew its pictures: status.json said finished, report.md was
    missing, and every later invocation said 'nothing to train'."""
    out = tmp_path / "cut"
    args = ["--seeds", "1", *tiny(tiny_data, epochs=1), "--out", str(out)]
    assert compare(*args).exit_code == 0
    run_dir = out / "runs" / "scratch-fused-sgd-fashion-mnist-seed0"
    assert folder.complete(run_dir)
    (run_dir / "report.md").unlink()
    assert not folder.complete(run_dir)
    again = compare(*args)
    assert again.exit_code == 0 and "(1 to resume)" in again.output, again.output
    assert folder.complete(run_dir)
    folder.write_status(run_dir, "interrupted", 1)  # a later session that ended otherwise beats the old summary
    assert not folder.complete(run_dir)


def test_a_signal_a_run_absorbed_after_its_last_batch_stops_the_comparison(tmp_path):
    """SIGINT while the last epoch is evaluated: the run stops after that epoch, which is its last, and exits 0;
    the comparison must not start the next run."""
    from fmclf import signals
    from fmclf.train.engine import StopFlag

    started = []

    def main(call: Call) -> int:
        started.append(call.out.name)
        with signals.stop_on_signals(StopFlag(), echo=lambda text: None):
            os.kill(os.getpid(), signal.SIGINT)  # the run notes the request, finishes its epoch and exits 0
        return 0

    ended = []
    jobs = [Job(name, Call(out=tmp_path / name), tmp_path / f"{name}.log") for name in ("a", "b")]
    with pytest.raises(Interrupted, match="1 job"):
        InProcessExecutor(main=main, note=lambda text: None).run(jobs, ended.append)
    assert started == ["a"] and [o.returncode for o in ended] == [0]


def test_an_in_process_run_cannot_change_what_the_next_one_sees(tmp_path):
    import torch

    seen, notes = [], []

    def main(call: Call) -> int:
        seen.append((torch.get_default_dtype(), torch.is_grad_enabled(), torch.rand(1).item(), random.random()))
        if call.out.name == "bad":
            torch.set_default_dtype(torch.float64)
            torch.set_grad_enabled(False)
        return 0

    torch.manual_seed(0)
    random.seed(0)
    jobs = [Job(name, Call(out=tmp_path / name), tmp_path / f"{name}.log") for name in ("bad", "good")]
    InProcessExecutor(main=main, note=notes.append).run(jobs, lambda outcome: None)
    assert seen[1][:2] == (torch.float32, True) and torch.get_default_dtype() == torch.float32
    assert seen[0][2:] == seen[1][2:]  # the random generators are put back too: torch's and Python's
    assert len(notes) == 1 and "bad changed torch's global state" in notes[0] and "default dtype" in notes[0]


def test_with_a_validation_split_the_validation_metric_ranks_and_test_is_reported():
    ranking = results.Ranking.parse(None, ["train_loss", "valid_acc", "test_acc"])
    assert ranking == results.Ranking("valid_acc", True, "test_acc")
    assert results.Ranking.parse("test_loss", ["valid_loss", "test_loss"]) == results.Ranking(
        "valid_loss", False, "test_loss")
    assert results.Ranking.parse(None, ["test_acc"]) == results.Ranking("test_acc", True)


def test_help_and_docs_agree_on_which_metrics_are_better_lower():
    help_text = " ".join(CliRunner().invoke(cli, ["compare", "--help"], terminal_width=400).output.split())
    docs = " ".join((pathlib.Path(__file__).parents[2] / "docs" / "comparing.md").read_text().split())
    words = ", ".join(results.LOWER_IS_BETTER)
    assert f"lower is better for names containing {words}" in help_text
    assert f"lower is better for names containing {words}" in docs


def test_tuning_refuses_what_it_cannot_do(tiny_data, tmp_path):
    out = tmp_path / "tune"
    for flags, text in (
        (["--tune", "lr"], "Write --tune SETTING=log:A..B"),
        (["--tune", "lr=log:0..1"], "a log range needs A > 0"),
        (["--tune", "lr=log:1..0.1"], "two numbers A..B with A < B"),
        (["--tune", "epochs=1,2"], "neither a setting that can be tuned"),
        (["--tune", "updater.torch-sgd.schedule=1,2"], "only numbers are tuned"),
        (["--tune", "updater.momentum=0,0.9", "-o", "updater.momentum=0.5", "--updater", "torch-sgd"],
         "both tuned (--tune) and set"),
        (["--tune", "lr=0.1,0.2", "-o", "dataset.valid=0"], "needs a validation split"),
        (["--trials", "3"], "--trials, --sampler and --prune go with --tune"),
        (["--prune", "halving"], "--trials, --sampler and --prune go with --tune"),
        (["--tune", "lr=0.1,0.2", "--prune", "halving", "--updater", "torch-sgd", "-o", "updater.schedule=cosine"],
         "a cosine schedule built for a rung's few epochs would hold its last rate"),
        (["--tune", "lr=0.1,0.2", "--prune", "halving", "--updater", "torch-sgd", "-o", "updater.schedule=constant",
          "-o", "updater.schedule=step"], "a step schedule built for a rung's few epochs"),
        (["--tune", "lr=0.1,0.2", "--prune", "halve"], "'halve' is not one of 'none', 'halving'"),
    ):
        result = compare(*flags, *tiny(tiny_data), "--out", str(out))
        assert result.exit_code == 2 and text in result.output, (flags, result.output)
    assert not out.exists()


def test_every_cell_gets_the_same_trials_then_fresh_seeds_and_a_rerun_trains_nothing(tiny_data, tmp_path):
    """The README's tuned comparison, shortened: 2 cells x 2 trials, then 1 seed each."""
    out = tmp_path / "tuned"
    args = ["--updater", "sgd", "--updater", "torch-sgd", "--tune", "lr=log:0.01..1", "--trials", "2", "--seeds", "1",
            *tiny(tiny_data, epochs=1), "--out", str(out)]
    first = compare(*args)
    assert first.exit_code == 0, first.output
    doc = json.loads((out / "compare.json").read_text())
    cells = doc["protocol"]["cells"]
    assert doc["protocol"]["trials_per_cell"] == 2 and doc["rank_by"] == "valid_acc" and doc["reported"] == "test_acc"
    points = [[t["params"]["lr"] for t in c["trials"]] for c in cells.values()]
    assert len(points) == 2 and points[0] == points[1] and len(points[0]) == 2  # the same points in every cell
    trial_seeds = {t["seed"] for c in cells.values() for t in c["trials"]}
    assert trial_seeds.isdisjoint({s for row in doc["rows"] for s in row["seeds"]})
    for row in doc["rows"]:
        chosen = cells[row["cell"]]["chosen"]
        assert row["lr"] == chosen["lr"] and row["seeds"] == [0]
        assert {"valid_acc", "test_acc"} <= set(row["metrics"]) and "lr" not in row["metrics"]
        config = (out / row["runs"]["0"] / "config.toml").read_text()
        assert f"lr = {chosen['lr']!r}" in config and "valid = 0.1" in config
    stamps = {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    again = compare(*args)
    assert again.exit_code == 0 and "4 trial(s) done, 0 to train" in again.output and "nothing to train" in again.output
    assert {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == stamps
    assert json.loads((out / "compare.json").read_text())["protocol"]["cells"] == cells


def test_each_run_keeps_its_test_predictions_and_the_bootstrap_resamples_them(tiny_data, tmp_path):
    """An lr axis, two seeds: the lr column is the configured rate, and the comparison with the best cell
    resamples seeds and test examples together (from each run's predictions.npy)."""
    out = tmp_path / "boot"
    result = compare("--lr", "0.5", "--lr", "0.05", "--seeds", "2", *tiny(tiny_data, epochs=1), "--out", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "compare.json").read_text())
    assert sorted(row["lr"] for row in doc["rows"]) == [0.05, 0.5] and doc["axes"] == ["lr"] and doc["few_seeds"]
    for row in doc["rows"]:
        for rel in row["runs"].values():
            correct = folder.read_correct(out / rel)
            final = json.loads((out / rel / "metrics.jsonl").read_text().splitlines()[-1])
            assert correct is not None and correct.mean() == pytest.approx(final["test_acc"], abs=1e-12)
    second = doc["rows"][1]["vs_best"]
    assert second["resampled"] == "seeds and test examples" and second["p_holm"] == second["p"]
    assert len(second["bootstrap_ci95"]) == 2 and 0.0 <= second["prob_improvement"] <= 1.0
    md = (out / "compare.md").read_text()
    assert "**Warning**: 2 seed(s) per cell: too few" in md and "| rank | lr | test_acc | vs best |" in md
    assert_picture(out / "scores.png")


def test_cells_with_the_same_scores_are_named_together():
    from fmclf.compare.grid import Cell
    from fmclf.compare.results import CellResult
    from fmclf.compare.scores import coinciding
    from fmclf.run.config import RunConfig

    cells = [CellResult(Cell({"loss": n}, {}, RunConfig(loss=n)), []) for n in ("a", "b", "c", "d")]
    for r, values in zip(cells, ({0: 0.8, 1: 0.9}, {0: 0.8, 1: 0.9}, {0: 0.7, 1: 0.9}, {})):
        r.values["test_acc"] = values
    assert coinciding(cells, "test_acc") == [[0, 1], [2], [3]]
    cells[1].values["test_acc"] = {0: 0.80000001, 1: 0.9}  # the same to the table's digits: drawn as the same
    assert coinciding(cells, "test_acc") == [[0, 1], [2], [3]]
    from fmclf.compare.curves import figure

    for r, acc in zip(cells, (0.8, 0.8, 0.7, None)):
        if acc is not None:
            r.histories = {0: [{"epoch": 1, "test_acc": acc}]}
    labels = figure(cells).legends[0].get_texts()
    assert [t.get_text() for t in labels][:3] == ["a (= b)", "b (= a)", "c"]


def test_the_comparison_lock_is_never_a_links_target(tiny_data, tmp_path):
    out, target = tmp_path / "linked", tmp_path / "elsewhere.txt"
    out.mkdir()
    target.write_text("mine")
    (out / ".lock").symlink_to(target)
    result = compare(*tiny(tiny_data), "--seeds", "1", "--out", str(out))
    assert result.exit_code == 2 and ".lock" in result.output and "symbolic link" in result.output, result.output
    assert target.read_text() == "mine" and not (out / "runs").exists()


def test_the_dry_run_and_compare_md_word_the_search_space_and_the_sampler_alike(tiny_data, tmp_path):
    # the dry run said "drawn by tpe" and "in {0.1, 0.2}" where compare.md said the sampler's name and "in [0.1, 0.2]"
    from fmclf.compare import markdown, tuning

    result = compare("--tune", "lr=0.1,0.2", "--tune", "batch_size=lin:8..16", "--trials", "2", "--sampler", "tpe",
                     "--seeds", "1",
                     *tiny(tiny_data), "--out", str(tmp_path / "dry"), "--dry-run")
    assert result.exit_code == 0, result.output
    said = "over lr in {0.1, 0.2}, batch_size lin:8..16, drawn by Optuna TPESampler (seed 0),"
    assert said in result.output
    space = [{"key": "lr", "values": [0.1, 0.2]},
             {"key": "batch_size", "scale": "lin", "low": 8.0, "high": 16.0, "integer": True}]
    assert tuning.space_text(space) == "lr in {0.1, 0.2}, batch_size lin:8..16"
    md = markdown._protocol_lines({"trials_per_cell": 2, "sampler": "Optuna TPESampler (seed 0)", "space": space,
                                   "trial_seeds": "SEED + 1000 + K for trial K", "cells": {}})
    assert "over lr in {0.1, 0.2}, batch_size lin:8..16, drawn by Optuna TPESampler (seed 0)," in md[0]
