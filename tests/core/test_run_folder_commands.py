"""The commands on a hostile or damaged run folder: links are refused (exit 2) and never written
through, FIFOs never block, malformed small files are clear errors or damaged rows, never a traceback."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.run import folder

BASE = ["-o", "dataset.verify=false", "--batch-size", "32", "--visualizer", "none", "--device", "cpu", "--seed", "3"]


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> pathlib.Path:
    from helpers import write_tiny_fashion

    return write_tiny_fashion(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    result = invoke("run", "--data-root", str(data), *BASE, "--epochs", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run(trained, tmp_path) -> pathlib.Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, symlinks=True)
    return copy


def commands(run: pathlib.Path, data: pathlib.Path) -> dict[str, list[str]]:
    return {"report": ["report", str(run), "--data-root", str(data)],
            "resume": ["run", "--resume", str(run), "--epochs", "2"],
            "predict": ["predict", str(run), "-n", "4", "--data-root", str(data)],
            "eval": ["eval", str(run), "--data-root", str(data)]}


@pytest.mark.parametrize("command", ["report", "resume", "predict", "eval"])
def test_a_lock_linked_to_a_victim_is_refused_and_the_victim_kept(run, data, tmp_path, command):
    """Issue 25's repro: `rm R/.lock; ln -s victim.txt R/.lock; fmclf report R` emptied victim.txt."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / folder.LOCK).unlink(missing_ok=True)
    (run / folder.LOCK).symlink_to(victim)
    result = invoke(*commands(run, data)[command])
    assert result.exit_code == 2, result.output
    assert "symbolic link" in result.output and folder.LOCK in result.output
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", [folder.SUMMARY, folder.METRICS, folder.WEIGHTS, folder.CONFIG])
def test_a_linked_file_is_refused_by_every_reader(run, data, tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_bytes((run / name).read_bytes())
    (run / name).unlink()
    (run / name).symlink_to(victim)
    before = victim.read_bytes()
    for command, args in commands(run, data).items():
        result = invoke(*args)
        assert result.exit_code == 2, (command, result.output)
        assert "symbolic link" in result.output, (command, result.output)
    assert victim.read_bytes() == before


def test_a_fresh_out_whose_lock_is_a_link_is_refused_without_creating_its_target(data, tmp_path):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / folder.LOCK).symlink_to(tmp_path / "made-through-the-link")
    result = invoke("run", "--data-root", str(data), *BASE, "--epochs", "1", "--out", str(out))
    assert result.exit_code == 2 and "symbolic link" in result.output, result.output
    assert not (tmp_path / "made-through-the-link").exists()
    assert sorted(os.listdir(out)) == [folder.LOCK]


def _within(seconds: float, *args: str):
    """Invoke with a watchdog: a command that blocks on a FIFO fails the test instead of hanging it."""
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(result=CliRunner().invoke(cli, list(args))), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{args} blocked"
    return box["result"]


@pytest.mark.parametrize("name", [folder.STATUS, folder.SUMMARY, folder.METRICS])
def test_a_fifo_never_blocks_runs_or_report(run, data, name):
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    listed = _within(60, "runs", str(run.parent), "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["status"] == "damaged" and "FIFO" in row["reason"]
    report = _within(60, "report", str(run), "--data-root", str(data))
    assert report.exit_code == 2 and "FIFO" in report.output, report.output


def test_a_status_missing_or_mistyping_its_fields_is_listed(run):
    for text in ['{"status": "failed"}', '{"status": "failed", "epochs_done": "1"}', '{"epochs_done": null}']:
        (run / folder.STATUS).write_text(text)
        result = invoke("runs", str(run.parent), "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["status"] == "finished"  # the summary says so; status.json says nothing


def test_one_damaged_metrics_file_does_not_hide_the_other_runs(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / folder.METRICS).write_text('{"epoch": 1, "train_loss": "x"}\n')
    result = invoke("runs", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output and "finished" in result.output
    rows = {pathlib.Path(r["path"]).name: r for r in json.loads(invoke("runs", str(tmp_path), "--json").output)}
    assert rows["other"]["status"] == "damaged" and rows["run"]["status"] == "finished"


def test_deeply_nested_toml_is_a_clear_error_everywhere(run, data, tmp_path):
    deep = "a = " + "{b = " * 3000 + "\n"
    (tmp_path / "deep.toml").write_text(deep)
    result = invoke("run", "--config", str(tmp_path / "deep.toml"), "--data-root", str(data))
    assert result.exit_code == 2 and "nested too deeply" in result.output, result.output
    (run / folder.CONFIG).write_text("[[" * 3000)
    result = invoke("eval", str(run), "--data-root", str(data))
    assert result.exit_code == 2 and "not valid TOML" in result.output, result.output
    result = invoke("runs", str(run.parent), "--json")
    assert result.exit_code == 0 and json.loads(result.output)[0]["status"] == "unreadable", result.output


def test_deeply_nested_json_in_metrics_is_a_clear_error(run, data):
    (run / folder.METRICS).write_text("[" * 100000 + "\n")
    result = invoke("report", str(run), "--data-root", str(data))
    assert result.exit_code == 1 and "nested too deeply" in result.output, result.output
    listed = invoke("runs", str(run.parent), "--json")
    assert json.loads(listed.output)[0]["status"] == "damaged"


def test_metric_rows_without_seconds_are_caught_before_the_report(run, data):
    rows = [json.loads(line) for line in (run / folder.METRICS).read_text().splitlines()]
    (run / folder.METRICS).write_text("".join(json.dumps({k: v for k, v in r.items() if k != "seconds"}) + "\n"
                                              for r in rows))
    result = invoke("report", str(run), "--data-root", str(data))
    assert result.exit_code == 1 and "seconds" in result.output and folder.METRICS in result.output, result.output


@pytest.mark.parametrize("split", ["classes", "__class__", "input_shape", ""])
def test_eval_takes_only_a_split_name(run, data, split):
    result = invoke("eval", str(run), "--split", split, "--data-root", str(data))
    assert result.exit_code == 2 and "--split" in result.output and "authors" not in result.output, result.output


def test_an_option_naming_an_owned_file_is_refused_before_any_work(data, tmp_path):
    for option in ["visualizer.csv.filename=status.json", "visualizer.csv.filename=curves.png",
                   "visualizer.tensorboard.log_dir=./model.pt"]:
        out = tmp_path / option.split("=")[1].strip("./")
        visualizer = option.split(".")[1]
        result = invoke("run", "--data-root", str(data), *BASE, "--visualizer", visualizer, "-o", option,
                        "--out", str(out))
        assert result.exit_code == 2 and "fmclf writes that file itself" in result.output, result.output
        assert not out.exists()
