"""Finding runs again: `fmclf runs`, `fmclf report`, `fmclf eval`, the resume line and the
resumed summary, and `fmclf show`'s light path, through the CLI on tiny data."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from fmclf.cli import cli
from fmclf.run import folder
from fmclf.run.lock import RunLock


def invoke(*args: str):
    return CliRunner().invoke(cli, ["-p", "chaos_plugin", *args])


def tiny(tiny_data, out, *args, epochs: int = 2):
    return invoke("run", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "-o", "dataset.download=false",
                  "--batch-size", "16", "--epochs", str(epochs), "--visualizer", "none", "--device", "cpu",
                  "--seed", "5", "--out", str(out), *args)


def listing(root: pathlib.Path) -> dict[str, dict]:
    result = invoke("runs", "--json", str(root))
    assert result.exit_code == 0, result.output
    return {pathlib.Path(r["path"]).name: r for r in json.loads(result.stdout)}


@pytest.fixture
def finished(tiny_data, tmp_path) -> pathlib.Path:
    out = tmp_path / "runs" / "a-finished"
    result = tiny(tiny_data, out)
    assert result.exit_code == 0, result.output
    return out


def test_runs_lists_every_status_newest_first(tiny_data, tmp_path, finished):
    root = finished.parent
    assert tiny(tiny_data, root / "b-interrupted", "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2",
                "-o", "visualizer.signal-at.batch=2").exit_code == 130
    assert tiny(tiny_data, root / "c-diverged", "--loss", "inf-at", "-o", "loss.at_call=9").exit_code == 1
    assert tiny(tiny_data, root / "d-running").exit_code == 0
    # runs started within one second: give them distinct recorded starts, in another order than their names
    for name, day in (("a-finished", 1), ("b-interrupted", 3), ("c-diverged", 2), ("d-running", 4)):
        config = root / name / "config.toml"
        lines = [f'started = "2026-01-0{day}T10:00:00+0000"' if line.startswith("started = ") else line
                 for line in config.read_text().splitlines()]
        config.write_text("\n".join(lines) + "\n")
    lock = RunLock(root / "d-running")  # a live writer: another process holds it (this one, here)
    lock.acquire()
    try:
        runs = listing(root)
    finally:
        lock.release()
    assert list(runs) == ["d-running", "b-interrupted", "c-diverged", "a-finished"]  # newest first
    assert runs["a-finished"]["status"] == "finished" and runs["a-finished"]["epochs_done"] == 2
    summary = json.loads((finished / "summary.json").read_text())
    assert runs["a-finished"]["test_acc"] == summary["test_acc"] and runs["a-finished"]["epochs"] == 2
    assert runs["b-interrupted"]["status"] == "interrupted" and runs["b-interrupted"]["epochs_done"] == 1
    assert runs["c-diverged"]["status"] == "diverged" and runs["c-diverged"]["epochs_done"] == 1
    assert "training diverged" in runs["c-diverged"]["reason"]
    assert runs["d-running"]["status"] == "running"
    assert runs["a-finished"]["components"]["model"] == "scratch" and runs["a-finished"]["started"]

    table = invoke("runs", str(root)).stdout.splitlines()
    assert table[0].split()[:2] == ["run", "started"]
    assert [line.split()[0] for line in table[1:5]] == ["d-running", "b-interrupted", "c-diverged", "a-finished"]
    assert table[1].split()[1:3] == ["2026-01-04", "10:00"]
    assert "2/2" in table[4] and "finished" in table[4] and "scratch + fused + sgd" in table[4]


def test_runs_reports_a_later_ending_and_a_callbacks_stop(tiny_data, tmp_path, finished):
    # resumed past its end (--epochs 4) and interrupted in epoch 3: what that session's end wrote counts,
    # not the older summary (written as the runner writes them; a signal cannot be aimed at a resumed epoch here)
    config = finished / "config.toml"
    config.write_text(config.read_text().replace("epochs = 2", "epochs = 4"))
    folder.write_status(finished, "interrupted", 2, "stopped by SIGINT after batch 3 of epoch 3")
    run = listing(finished.parent)["a-finished"]
    assert (run["status"], run["epochs_done"], run["epochs"]) == ("interrupted", 2, 4)
    folder.write_status(finished, "finished", 2)  # a status that predates a longer --epochs: not finished
    assert listing(finished.parent)["a-finished"]["status"] == "interrupted"
    # a run a callback stopped records it in its summary (issue 10's "stopped")
    done = invoke("run", "--resume", str(finished), "--visualizer", "none")
    assert done.exit_code == 0, done.output
    summary = json.loads((finished / "summary.json").read_text())
    summary["stopped"] = {"by": "callback 'early-stop'", "reason": "test_acc did not improve", "epoch": 4}
    (finished / "summary.json").write_text(json.dumps(summary))
    run = listing(finished.parent)["a-finished"]
    assert run["status"] == "stopped" and "early-stop" in run["reason"]


def test_runs_with_nothing_to_list_and_a_missing_folder(tmp_path):
    empty = invoke("runs", str(tmp_path))
    assert empty.exit_code == 0 and "no run folders under" in empty.stdout
    missing = invoke("runs", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "is not a folder" in missing.output


def test_eval_gives_the_runs_own_final_metrics_from_the_saved_weights(finished):
    result = invoke("eval", str(finished), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    summary = json.loads((finished / "summary.json").read_text())
    assert got["test_acc"] == summary["test_acc"]
    assert got["per_class_test_acc"] == summary["per_class_test_acc"]
    assert got["examples"] == 40 and got["weights"].endswith("model.pt")
    assert got["test_loss"] > 0 and len(got["confusion"]) == 10
    text = invoke("eval", str(finished)).stdout
    assert "test acc" in text and "test loss" in text and "most often taken for" in text and "trouser" in text
    train = json.loads(invoke("eval", str(finished), "--split", "train", "--json").stdout)
    assert train["examples"] == 96 and "train_acc" in train
    assert invoke("eval", str(finished), "--split", "valid").exit_code == 2


def test_eval_of_an_interrupted_run_uses_its_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "half"
    assert tiny(tiny_data, out, "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2",
                "-o", "visualizer.signal-at.batch=0", epochs=3).exit_code == 130
    result = invoke("eval", str(out))
    assert result.exit_code == 0, result.output
    assert "weights from" in result.stdout and "checkpoint.pt" in result.stdout
    assert invoke("eval", str(tmp_path)).exit_code == 2  # not a run folder


def test_report_rebuilds_report_md_and_every_picture(finished):
    names = ("report.md", "curves.png", "confusion.png", "predictions.png")
    before = {n: (finished / n).read_bytes() for n in names}
    for n in names:  # as a Ctrl-C while the pictures were drawn might leave it
        (finished / n).unlink()
    result = invoke("report", str(finished))
    assert result.exit_code == 0, result.output
    assert all((finished / n).stat().st_size > 1000 for n in names[1:])
    assert (finished / "report.md").read_bytes() == before["report.md"]  # the same report, rebuilt
    assert (finished / "confusion.png").read_bytes() == before["confusion.png"]  # the same matrix


def test_report_rebuilds_the_time_the_run_reported(tiny_data, tmp_path, monkeypatch):
    # 0.0151 s prints as 0.02 but is recorded as 0.015 (0.01): the report written at the end of the run
    # must say what summary.json records, or `fmclf report` rebuilds a different report.md
    from fmclf.run.session import Session

    train = Session.train
    monkeypatch.setattr(Session, "train", lambda self, parts, state: (*train(self, parts, state)[:2], 0.0151))
    out = tmp_path / "timed"
    assert tiny(tiny_data, out).exit_code == 0
    before = (out / "report.md").read_text()
    assert f"{json.loads((out / 'summary.json').read_text())['seconds']:.2f} s in this session" in before
    assert invoke("report", str(out)).exit_code == 0
    assert (out / "report.md").read_text() == before


def test_report_of_a_run_with_no_finished_epoch_says_so(tiny_data, tmp_path):
    out = tmp_path / "early"
    assert tiny(tiny_data, out, "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=1",
                "-o", "visualizer.signal-at.batch=2").exit_code == 130
    result = invoke("report", str(out))
    assert result.exit_code == 1 and "nothing to report yet" in result.output and "Traceback" not in result.output


def test_the_resume_line_and_the_resumed_summary(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert tiny(tiny_data, out, "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2",
                "-o", "visualizer.signal-at.batch=4", epochs=3).exit_code == 130
    resumed = invoke("run", "--resume", str(out), "--visualizer", "none")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {out} at epoch 2 of 3, batch 5 of 6" in resumed.stdout  # batch 5 of the epoch's 6
    assert "done: 3 epoch(s) (2 of them in this session) in " in resumed.stdout


def test_show_draws_from_the_few_examples_it_needs(tiny_data, tmp_path, monkeypatch):
    import torch

    import fmclf_plugins.fashion_mnist_tensors as tensors
    from fmclf.draw.gallery import first_examples
    from fmclf_plugins.fashion_mnist import fashion_mnist

    def whole(*args, **kwargs):
        raise AssertionError("show built the whole data set")

    common = {"data_root": tiny_data, "verify": False, "download": False}
    for split, seed, options in (("train", 0, {}), ("train", 7, {"resize": 12}), ("test", 0, {"raw_pixels": True})):
        data = fashion_mnist(batch_size=4, device=torch.device("cpu"), seed=seed, **common, **options)
        batches = getattr(data, split)
        batches.set_epoch(1)
        X, y = first_examples(batches, 18)
        PX, Py, classes = fashion_mnist.preview(n=18, split=split, seed=seed, **common, **options)
        assert torch.equal(PX, X) and torch.equal(Py, y) and list(classes) == list(data.classes)
    monkeypatch.setattr(tensors, "build_dataset", whole)
    result = CliRunner().invoke(cli, ["show", "--data-root", str(tiny_data), "-o", "dataset.verify=false", "-n", "18",
                                      "--seed", "7", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").stat().st_size > 1000
