"""--out takes only a new or empty folder: never one holding the user's files, never the current
folder by way of an empty string."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from fmclf.cli import cli

TINY = ["-o", "dataset.verify=false", "--epochs", "1", "--batch-size", "96", "--visualizer", "none", "--seed", "1"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("files", [{"report.md": "# my own notes\n"}, {"notes.txt": "x", "data.csv": "1,2\n"},
                                   {"sub/deep.txt": "x"}, {".hidden": "x"}])
def test_a_folder_holding_files_but_no_run_is_refused_and_left_alone(tiny_data, tmp_path, files):
    out = tmp_path / "mine"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = snapshot(out)
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "already holds files" in result.output and "but no fmclf run" in result.output
    assert "choose another --out" in result.output and "Traceback" not in result.output
    assert snapshot(out) == before and sorted(os.listdir(out)) == sorted({n.split("/")[0] for n in files})


def test_an_empty_folder_and_one_a_killed_run_left_take_a_run(tiny_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(empty)).exit_code == 0
    left = tmp_path / "left"
    left.mkdir()
    (left / ".lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere"}) + "\n")
    (left / ".config.toml.x1y2z3.tmp").write_text("")  # a write SIGKILL cut short
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", str(left))
    assert result.exit_code == 0, result.output
    assert "took over the lock" in result.output
    assert (left / "model.pt").exists()


@pytest.mark.parametrize("args", [
    ["run", "--out", ""], ["run", "--out", " "], ["run", "--data-root", ""], ["run", "--resume", ""],
    ["run", "--config", ""], ["run", "-o", "dataset.data_root="], ["predict", ""], ["show", "--out", ""],
    ["show", "--data-root", ""], ["eval", ""], ["eval", "x", "--data-root", ""], ["report", ""],
    ["report", "x", "--data-root", ""], ["predict", "x", "--data-root", ""],
])
def test_empty_paths_are_refused_instead_of_meaning_the_current_folder(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "empty" in result.output and "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_out_dot_in_a_folder_with_files_is_refused(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.md").write_text("mine")
    result = invoke("run", "--data-root", str(tiny_data), *TINY, "--out", ".")
    assert result.exit_code == 2 and "already holds files (report.md, tiny)" in result.output
    assert (tmp_path / "report.md").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["report.md", "tiny"]
