"""What is read back from a run folder is checked, and refused with the file named: checkpoint fields and
types, metrics.jsonl rows, config.toml settings; reads are bounded (--config /dev/zero); paths that are not
UTF-8 are refused before anything is written; --resume cannot end a run before the point it has reached."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from fmclf.cli import cli

TESTS = pathlib.Path(__file__).parents[1]
TINY = ["-o", "dataset.verify=false", "--batch-size", "16", "--visualizer", "none", "--seed", "5", "--device", "cpu"]


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def resume(run: pathlib.Path, *more: str):
    """--resume the stopped run (its signal-at visualizer swapped for none)."""
    return invoke("-p", "chaos_plugin", "run", "--resume", str(run), "--visualizer", "none", *more)


def files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped after batch 2 of epoch 2 (of 2): checkpoint with epoch 1, batch 2."""
    from helpers import write_tiny_fashion

    base = tmp_path_factory.mktemp("stopped")
    data = write_tiny_fashion(base / "tiny")
    out = base / "run"
    result = CliRunner().invoke(cli, ["-p", "chaos_plugin", "run", "--data-root", str(data), *TINY, "--epochs", "2",
                                      "--visualizer", "signal-at", "-o", "visualizer.signal-at.epoch=2",
                                      "-o", "visualizer.signal-at.batch=2", "--out", str(out)])
    assert result.exit_code == 130, result.output
    return out


@pytest.fixture
def copy_of(stopped_run, tmp_path):
    import shutil

    def copy() -> pathlib.Path:
        target = tmp_path / "copy"
        shutil.copytree(stopped_run, target)
        return target

    return copy


@pytest.fixture(autouse=True)
def _chaos_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def tamper(run: pathlib.Path, change) -> None:
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, run / "checkpoint.pt")


@pytest.mark.parametrize("change,words", [
    (lambda c: c["state"].update(epoch="1"), "its state.epoch is '1', not a whole number"),
    (lambda c: c["state"].update(epoch=-2), "its state.epoch is -2, not a whole number of 0 or more"),
    (lambda c: c["state"].update(epoch=True), "its state.epoch is True"),
    (lambda c: c["state"].update(history="abc"), "its history: the history is str, not a list of epochs"),
    (lambda c: c["state"].update(history=[{"epoch": 1}]), "epoch 1's train_loss is None, not a number"),
    (lambda c: c["state"]["history"].append(c["state"]["history"][0]), "row 2 says epoch 1"),
    (lambda c: c["state"].update(epoch=3), "its state says 3 epoch(s) are done, but its history holds 1"),
    (lambda c: c["state"].update(batch=999), "it says 999 batches of epoch 2 are done, but an epoch has 6"),
    (lambda c: c["state"].update(loss_sum=float("nan")), "its state.loss_sum is nan"),
    (lambda c: c["state"].update(correct=10**6), "correct of"),
    (lambda c: c["state"].update(extra=1), "its training state is"),
    (lambda c: c.update(world_size=0), "its world_size is 0"),
    (lambda c: c.update(model="weights"), "its model is 'str', not a state_dict"),
    (lambda c: c.update(rng={}), "random number generators' state is missing"),
    (lambda c: c["rng"].update(python=(3, "x", None)), "Python random number generator's state"),
    (lambda c: c.update(updater=[1, 2]), "its updater state is [1, 2]"),
])
def test_a_tampered_checkpoint_is_refused_naming_it(copy_of, change, words):
    run = copy_of()
    tamper(run, change)
    before = files(run)
    result = resume(run)
    assert result.exit_code == 1, result.output
    assert f"{run / 'checkpoint.pt'}" in result.stderr and words in result.stderr, result.stderr
    assert files(run) == before  # refused before anything is written


def test_a_damaged_metrics_jsonl_is_mended_from_the_checkpoint(copy_of):
    run = copy_of()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_lo\n\x00\x00garbage\n')
    result = resume(run)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("text,words", [
    ('{"epoch": 1, "train_lo\n', "line 1, is not JSON"),
    ("[1, 2]\n", "epoch 1's row is [1, 2], not an object"),
    ('{"epoch": 2, "train_loss": 1, "train_acc": 1, "test_acc": 1}\n', "row 1 says epoch 2"),
    (b"\xff\xfe\n", "is not UTF-8 text"),
])
def test_a_damaged_metrics_jsonl_without_a_checkpoint_is_refused_naming_it(copy_of, text, words):
    run = copy_of()
    (run / "checkpoint.pt").unlink()
    (run / "metrics.jsonl").write_bytes(text if isinstance(text, bytes) else text.encode())
    before = files(run)
    result = resume(run)
    assert result.exit_code == 1, result.output
    assert f"{run / 'metrics.jsonl'}" in result.stderr and words in result.stderr, result.stderr
    assert files(run) == before


def test_resume_cannot_end_a_run_before_the_point_it_reached(copy_of):
    """Stopped after batch 2 of epoch 2: --epochs 1 would leave half of epoch 2 in model.pt under epoch 1's
    accuracy. Refused; --epochs 2 finishes it."""
    run = copy_of()
    before = files(run)
    result = resume(run, "--epochs", "1")
    assert result.exit_code == 2, result.output
    assert "--epochs 1 is fewer than" in result.stderr and "1 epoch(s) and 2 batch(es) of epoch 2" in result.stderr
    assert "Pass --epochs 2 or more" in result.stderr and files(run) == before
    done = resume(run, "--epochs", "2")
    assert done.exit_code == 0, done.output
    shorter = resume(run, "--epochs", "1")
    assert shorter.exit_code == 2 and "it has trained 2 epoch(s)" in shorter.stderr
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("setting,words", [
    ('epochs = "3"', "epochs must be a whole number, got '3'"), ("lr = true", "lr must be a number, got True"),
    ("model = 3", "model must be a name (a string), got 3"), ("cuda_graphs = 1", "cuda_graphs must be true or false"),
])
def test_a_tampered_config_toml_is_refused_naming_it(copy_of, setting, words):
    run = copy_of()
    key = setting.split(" ")[0]
    text = "\n".join(line for line in (run / "config.toml").read_text().splitlines() if not line.startswith(key + " "))
    (run / "config.toml").write_text(f"{setting}\n{text}\n")
    before = files(run)
    result = resume(run)
    assert result.exit_code == 2, result.output
    assert f"config file '{run / 'config.toml'}': {words}" in result.stderr, result.stderr
    assert files(run) == before


def test_an_edited_provenance_does_not_stop_a_resume(copy_of):
    run = copy_of()
    text = (run / "config.toml").read_text().replace("[provenance]\n", "[provenance]\nwhen = 2026-01-01T10:00:00\n"
                                                                      'resumed = "not a list"\n', 1)
    (run / "config.toml").write_text(text)
    result = resume(run)
    assert result.exit_code == 0, result.output
    assert "when = \"2026-01-01 10:00:00\"" in (run / "config.toml").read_text()


def test_temporaries_a_killed_writer_left_are_removed_on_resume(copy_of):
    run = copy_of()
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"")
    assert resume(run).exit_code == 0
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom", "folder", "binary"])
def test_config_reads_are_bounded_and_refuse_what_is_not_a_config(tmp_path, source):
    path = {"folder": tmp_path, "binary": tmp_path / "b.toml"}.get(source, pathlib.Path(source))
    if source == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    result = invoke("run", "--config", str(path), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert f"config file {str(path)!r}" in result.stderr and "Traceback" not in result.output
    assert {"/dev/zero": "is larger than 1 MiB", "/dev/urandom": "not", "folder": "is a folder",
            "binary": "is not UTF-8 text"}[source] in result.stderr


@pytest.mark.parametrize("flag", ["--out", "--data-root", "--resume"])
def test_a_path_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", flag, "runs/caf\udce9")  # what Python makes of the bytes b"caf\xe9" in argv
    assert result.exit_code == 2, result.output
    assert "holds bytes that are not UTF-8 text" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_is_not_utf8_through_the_real_command_line(tmp_path):
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    out = os.fsencode(tmp_path) + b"/caf\xe9"
    proc = subprocess.run([os.fsencode(exe), b"run", b"--out", out], capture_output=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert b"holds bytes that are not UTF-8 text" in proc.stderr and b"Traceback" not in proc.stderr
    assert not os.path.exists(out)


def test_a_data_root_under_a_folder_that_is_not_utf8_is_refused(tmp_path, tiny_data):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(odd)
    os.rename(tiny_data, os.path.join(odd, b"tiny"))
    exe = pathlib.Path(sys.executable).with_name("fmclf")
    proc = subprocess.run([os.fsencode(exe), b"run", b"--data-root", b"tiny", b"--out", os.fsencode(tmp_path / "r")],
                          cwd=odd, capture_output=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert b"not UTF-8 text" in proc.stderr and b"Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
