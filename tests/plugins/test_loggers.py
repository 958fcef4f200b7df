"""The built-in csv and tensorboard visualizers, through `fmclf run` on tiny data.
TensorBoard's event files are read back with tensorboard's own reader."""

from __future__ import annotations

import csv
import json
import pathlib
import sys

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.testing import check_visualizer

BATCHES = 6  # 96 tiny training examples, 16 a batch


def run(tiny_data, out, *args):
    return CliRunner().invoke(cli, [
        "-p", "chaos_plugin", "run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
        "-o", "dataset.download=false", "--batch-size", "16", "--seed", "3", "--device", "cpu", "--out", str(out),
        *args,
    ])


def history(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_csv(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_has_a_row_per_epoch_and_a_column_per_metric(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run(tiny_data, out, "--epochs", "2", "--visualizer", "csv")
    assert result.exit_code == 0, result.output
    rows, epochs = read_csv(out / "metrics.csv"), history(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, epoch in zip(rows, epochs):  # every number of metrics.jsonl, read back exactly
        for key, value in epoch.items():
            if isinstance(value, dict):
                for sub, inner in value.items():
                    assert float(row[f"{key}/{sub}"]) == inner
            else:
                assert float(row[key]) == value
    assert list(rows[0])[:3] == ["epoch", "train_loss", "train_acc"] and {"test_loss", "test_acc"} <= set(rows[0])


def test_csv_continues_a_resumed_run_without_a_duplicate_row(tiny_data, tmp_path):
    out = tmp_path / "run"
    stopped = run(tiny_data, out, "--epochs", "3", "--visualizer", "csv", "--visualizer", "signal-at",
                  "-o", "visualizer.signal-at.epoch=2", "-o", "visualizer.signal-at.batch=3")
    assert stopped.exit_code == 130, stopped.output
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")] == ["1"]
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(out), "--visualizer", "csv"])
    assert resumed.exit_code == 0, resumed.output
    further = CliRunner().invoke(cli, ["run", "--resume", str(out), "--epochs", "4", "--visualizer", "csv"])
    assert further.exit_code == 0, further.output
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r["test_acc"]) for r in rows] == [h["test_acc"] for h in history(out)]


def test_csv_gives_a_metric_first_seen_later_its_own_column(tmp_path):
    from types import SimpleNamespace

    from fmclf_plugins.csv_logger import CsvLogger

    logger = CsvLogger(tmp_path / "metrics.csv")
    rows = [{"epoch": 1, "train_loss": 0.5, "note": "text is left out"},
            {"epoch": 2, "train_loss": 0.25, "test_ece": 0.125, "test_f1": {"macro": 0.5}}]
    logger.on_epoch_end(SimpleNamespace(history=rows))
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "epoch,train_loss,test_ece,test_f1/macro", "1,0.5,,", "2,0.25,0.125,0.5"]


def test_csv_keeps_the_contract_and_refuses_fmclfs_own_files(tmp_path):
    check_visualizer("csv", run_dir=tmp_path)
    assert [r["epoch"] for r in read_csv(tmp_path / "metrics.csv")] == ["1", "2", "3"]
    result = CliRunner().invoke(cli, ["run", "--visualizer", "csv", "-o", "visualizer.csv.filename=summary.json",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "fmclf writes that file itself" in result.output


# --- tensorboard ------------------------------------------------------------------------------

def events(folder: pathlib.Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_tensorboard_logs_every_metric_the_config_weights_and_confusion(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run(tiny_data, out, "--epochs", "2", "--visualizer", "tensorboard", "-o", "visualizer.tensorboard.every=2")
    assert result.exit_code == 0, result.output
    acc = events(out / "tensorboard")
    epochs = history(out)
    for key in ("train_loss", "train_acc", "test_acc", "seconds", "per_class_test_acc/trouser"):
        got = acc.Scalars(key)
        assert [e.step for e in got] == [BATCHES, 2 * BATCHES]  # the global step: batches trained
        want = [h[key] if "/" not in key else h[key.split("/")[0]][key.split("/")[1]] for h in epochs]
        assert [e.value for e in got] == pytest.approx(want, rel=1e-6)
    assert [e.value for e in acc.Scalars("epoch")] == [1, 2]
    assert [e.step for e in acc.Scalars("batch/train_loss")] == [2, 4, 6, 8, 10, 12]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'model = "scratch"' in text and "seed = 3" in text
    assert {"weights/W", "weights/b"} <= set(acc.Tags()["histograms"])
    (image,) = acc.Images("confusion")
    assert image.width > 100 and image.height > 100


def test_tensorboard_resume_logs_each_step_once(tiny_data, tmp_path):
    out = tmp_path / "run"
    first = run(tiny_data, out, "--epochs", "2", "--visualizer", "tensorboard")
    assert first.exit_code == 0, first.output
    further = CliRunner().invoke(cli, ["run", "--resume", str(out), "--epochs", "3", "--visualizer", "tensorboard"])
    assert further.exit_code == 0, further.output
    steps = [e.step for e in events(out / "tensorboard").Scalars("test_acc")]
    assert steps == [BATCHES, 2 * BATCHES, 3 * BATCHES]


def test_tensorboard_purges_what_an_interrupted_session_logged_past_its_checkpoint(tmp_path):
    from types import SimpleNamespace

    from fmclf_plugins.tensorboard_logger import TensorBoardLogger

    def session(epochs, start):
        logger = TensorBoardLogger(tmp_path, every=0)
        logger.on_fit_start(SimpleNamespace(num_batches=10, config={}))
        for epoch in epochs:
            logger.on_epoch_end(SimpleNamespace(epoch=epoch, metrics={"test_acc": start + epoch}))
        logger.close()

    session([1, 2, 3], 0.0)  # epoch 3 was logged, then the process died before its checkpoint
    session([3, 4], 0.5)  # the resumed run trains epoch 3 again
    got = [(e.step, e.value) for e in events(tmp_path).Scalars("test_acc")]
    assert got == [(10, 1.0), (20, 2.0), (30, 3.5), (40, 4.5)]


def test_tensorboard_without_the_package_names_the_extra(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    out = tmp_path / "run"
    result = run(tiny_data, out, "--epochs", "1", "--visualizer", "tensorboard")
    assert result.exit_code == 2, result.output
    assert "pip install 'fmclf[tensorboard]'" in result.output and "Traceback" not in result.output
    assert not out.exists()
