"""curves.png's panels beside the metrics: the learning rate as the schedule set it, each epoch, and the accuracy
against wall time; cells whose curves coincide named together."""

from __future__ import annotations

import json
import pathlib

import pytest

from fmclf.compare import curves, results
from fmclf.compare.grid import Cell
from fmclf.compare.jobs import FINISHED, Run
from fmclf.run.config import RunConfig

from picture_checks import assert_picture


def cell(loss: str) -> Cell:
    return Cell({"loss": loss}, {}, RunConfig(loss=loss))


def history(lr: float, accs: list[float], seconds: list[float]) -> list[dict]:
    """Epochs of a cosine-like schedule from ``lr``: each epoch's end rate halves."""
    return [{"epoch": e, "train_loss": 1.0 / e, "train_acc": a, "test_acc": a, "lr": lr / 2 ** e, "seconds": s}
            for e, (a, s) in enumerate(zip(accs, seconds), start=1)]


def found(tmp_path: pathlib.Path, rows: dict[str, list[list[dict]]]) -> list[results.CellResult]:
    cells, runs = [cell(name) for name in rows], []
    for c in cells:
        for seed, h in enumerate(rows[c.components["loss"]]):
            run = Run(c, seed, c.config, tmp_path, state=FINISHED)
            run.run_dir.mkdir(parents=True)
            (run.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in h))
            runs.append(run)
    return results.collect(cells, runs)


def test_wall_time_is_the_mean_elapsed_seconds_at_each_epochs_end():
    a = history(0.1, [0.5, 0.6, 0.7], [1.0, 2.0, 3.0])
    b = history(0.1, [0.7, 0.8, 0.9], [3.0, 2.0, 1.0])
    x, y = curves.wall_time([a, b], "test_acc")
    assert x == pytest.approx([2.0, 4.0, 6.0]) and y == pytest.approx([0.6, 0.7, 0.8])
    cut = [{k: v for k, v in row.items() if not (row["epoch"] == 2 and k == "seconds")} for row in a]
    assert curves.wall_time([cut], "test_acc") == ([1.0], [0.5])  # an epoch without its seconds ends the curve


def test_curves_draw_the_schedule_and_accuracy_against_time_and_name_coinciding_cells(tmp_path):
    same = [history(0.4, [0.5, 0.6, 0.7], [1.0, 1.0, 1.0]), history(0.4, [0.55, 0.65, 0.7], [1.0, 1.2, 1.0])]
    other = [history(0.1, [0.3, 0.4, 0.5], [2.0, 2.0, 2.0]), history(0.1, [0.35, 0.4, 0.45], [2.0, 2.0, 2.0])]
    cells = found(tmp_path, {"naive": same, "fused": same, "other": other})
    fig = curves.figure(cells)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == ["train_loss", "train_acc", "test_acc", curves.LR_PANEL, "test_acc against wall time"]
    lr_lines = {line.get_label(): list(line.get_ydata()) for line in panels[curves.LR_PANEL].get_lines()}
    assert lr_lines["other"] == pytest.approx([0.05, 0.025, 0.0125])  # the schedule, not one number
    assert lr_lines["naive (= fused)"] == pytest.approx([0.2, 0.1, 0.05]) and "fused (= naive)" in lr_lines
    timed = {line.get_label(): list(line.get_xdata()) for line in panels["test_acc against wall time"].get_lines()}
    assert timed["other"] == pytest.approx([2.0, 4.0, 6.0]) and timed["naive (= fused)"] == pytest.approx([1, 2.1, 3.1])
    assert_picture(curves.write(cells, tmp_path / "curves.png"))
