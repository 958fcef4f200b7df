"""One RunFolder owns every file of a run folder: one table of names, one way to open them (no link
followed, only regular files, never blocking, read within a bound), and plugins that ask it for a path."""

from __future__ import annotations

import ast
import os
import pathlib

import pytest

from fmclf import atomic
from fmclf.errors import OptionError, UsageError
from fmclf.run import folder
from fmclf.run.lock import RunLock, holder

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_run_folder_file_is_named_in_one_table_only():
    """No module but run/folder.py spells a run-folder file's name as a string of its own: they ask the table.
    (fmclf/compare keeps a comparison folder, whose files are its own.)"""
    names = set(folder.FILES)
    spelled = []
    for source in sorted([*(ROOT / "fmclf").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        if source == ROOT / "fmclf" / "run" / "folder.py" or (ROOT / "fmclf" / "compare") in source.parents:
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                spelled.append(f"{source.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not spelled, spelled


def test_the_table_keeps_the_names_older_run_folders_use():
    assert {"config.toml", "metrics.jsonl", "checkpoint.pt", "model.pt", "summary.json", "status.json", ".lock",
            "report.md", "best.pt", "curves.png", "confusion.png", "predictions.png"} <= set(folder.FILES)


# --- one opening path ---------------------------------------------------------------------------------------------

def test_owned_reads_refuse_links_fifos_folders_and_devices(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "link.json").symlink_to(victim)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    for name, what in [("link.json", "a symbolic link"), ("zero.json", "a symbolic link"),
                       ("fifo.json", "a FIFO"), ("dir.json", "a folder")]:
        with pytest.raises(atomic.RefusedFile, match=what) as caught:
            folder.read_owned(tmp_path / name)
        assert caught.value.exit_code == 2 and name in str(caught.value)
    with pytest.raises(FileNotFoundError):
        folder.read_owned(tmp_path / "absent.json")
    assert victim.read_text() == "precious\n"


def test_owned_reads_are_bounded_by_the_table(tmp_path):
    path = tmp_path / folder.STATUS
    path.write_bytes(b" " * (folder.FILES[folder.STATUS].limit + 1))
    with pytest.raises(atomic.TooLarge):
        folder.read_owned(path)
    assert folder.read_status(tmp_path) is None  # shown as no ending, not read to the end


def test_a_lock_that_is_a_link_is_refused_and_neither_followed_nor_created(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / folder.LOCK).symlink_to(victim)
    with pytest.raises(atomic.RefusedFile, match="symbolic link"):
        RunLock(run).acquire()
    assert victim.read_text() == "precious\n"
    assert holder(run) is None  # fmclf runs: nobody holds a link
    (run / folder.LOCK).unlink()
    (run / folder.LOCK).symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(atomic.RefusedFile):
        RunLock(run).acquire()
    assert not (tmp_path / "created-through-the-link").exists()


def test_an_atomic_write_replaces_a_link_and_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / folder.SUMMARY).symlink_to(victim)
    folder.write_json(tmp_path / folder.SUMMARY, {"a": 1})
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / folder.SUMMARY).is_symlink()


def test_a_job_log_is_appended_to_only_as_a_regular_file(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "job.log").symlink_to(victim)
    with pytest.raises(atomic.RefusedFile):
        atomic.open_append(tmp_path / "job.log")
    with atomic.open_append(tmp_path / "fresh.log", "a") as log:
        log.write("line\n")
    assert (tmp_path / "fresh.log").read_text() == "line\n" and victim.read_text() == "precious\n"
    (tmp_path / "jobs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(atomic.RefusedFile, match="jobs"):
        atomic.open_append(tmp_path / "jobs" / "run.log")
    assert not (tmp_path / "elsewhere" / "run.log").exists()


def test_check_files_refuses_any_owned_name_that_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / folder.CURVES)
    with pytest.raises(atomic.RefusedFile, match="FIFO"):
        folder.check_files(tmp_path)


# --- plugins ask for a path ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(folder.FILES))
def test_a_plugin_cannot_take_a_name_the_folder_owns(tmp_path, name):
    with pytest.raises(OptionError, match="fmclf writes that file itself"):
        folder.path_for(tmp_path, name, component="visualizer 'x'")


def test_a_plugin_gets_a_plain_name_inside_the_folder(tmp_path):
    assert folder.path_for(tmp_path, "mine.csv", component="visualizer 'x'") == tmp_path / "mine.csv"
    for bad in ["", ".", "..", "../x.csv", "sub/x.csv", "/tmp/x.csv"]:
        with pytest.raises(OptionError, match="plain name"):
            folder.path_for(tmp_path, bad, component="visualizer 'x'")
    with pytest.raises(OptionError, match="given none"):
        folder.path_for(None, "x.csv", component="visualizer 'x'")


def test_any_string_option_that_lands_on_an_owned_file_is_refused(tmp_path):
    kinds = {"visualizer.x": "visualizer", "callback.y": "callback", "dataset": "dataset"}
    for value in ["status.json", "./curves.png", "logs/../model.pt", ".lock"]:
        with pytest.raises(OptionError, match="fmclf writes that file itself"):
            folder.check_options({"visualizer.x": {"path": value}}, kinds)
    with pytest.raises(OptionError, match="callback 'y'"):
        folder.check_options({"callback.y": {"out": str(tmp_path / "best.pt")}}, kinds, tmp_path)
    # elsewhere, or a component that gets no run folder (its paths are the user's): accepted
    folder.check_options({"visualizer.x": {"path": "mine.csv", "n": 3}, "dataset": {"data_root": "model.pt"}}, kinds)
    folder.check_options({"callback.y": {"out": "/elsewhere/best.pt"}}, kinds, tmp_path)


# --- malformed small files -----------------------------------------------------------------------------------------

def test_status_without_its_fields_is_no_ending(tmp_path):
    for text in ['{"status": "failed"}', '{"status": "failed", "epochs_done": "3"}', '{"status": "failed", '
                 '"epochs_done": true}', '[1]', '"x"', '{"status": 3, "epochs_done": 1}', "[" * 100000]:
        (tmp_path / folder.STATUS).write_text(text)
        assert folder.read_status(tmp_path) is None, text


def test_deeply_nested_json_or_toml_is_bad_input_not_a_recursion_error(tmp_path):
    (tmp_path / folder.METRICS).write_text("[" * 100000 + "\n")
    with pytest.raises(Exception, match="nested too deeply") as caught:
        folder.read_metrics(tmp_path)
    assert not isinstance(caught.value, RecursionError)
    from fmclf.run.config import load_config

    for text in ["a = " + "[" * 3000, "a = " + "{b = " * 2000, "[[" * 3000]:
        (tmp_path / "deep.toml").write_text(text)
        with pytest.raises(UsageError, match="not valid TOML"):
            load_config(tmp_path / "deep.toml")


def test_metric_rows_without_seconds_fail_the_row_check():
    row = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.5, "test_acc": 0.5}
    assert "seconds" in (folder.check_rows([row]) or "")
    assert folder.check_rows([{**row, "seconds": 0.1}]) is None
