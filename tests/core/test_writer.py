"""Checkpoints written on a thread of their own: in order, complete when the run returns,
and a failed write is still the run's error."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

from fmclf import atomic
from fmclf.cli import cli
from fmclf.run.writer import BackgroundWriter


def test_writes_land_in_order_and_flush_waits_for_them(tmp_path, monkeypatch):
    slow = threading.Event()
    real = atomic.write_text

    def write_text(path, text):
        slow.wait(5)  # the disk is slow: the caller must not wait for it
        real(path, text)

    monkeypatch.setattr(atomic, "write_text", write_text)
    writer = BackgroundWriter()
    start = time.perf_counter()
    writer.write_text(tmp_path / "a.txt", "first")
    writer.write_text(tmp_path / "a.txt", "second")
    assert time.perf_counter() - start < 4 and not (tmp_path / "a.txt").exists()
    slow.set()
    writer.flush()
    assert (tmp_path / "a.txt").read_text() == "second"
    writer.close()


def test_a_failed_write_is_raised_at_the_next_write_or_the_close(tmp_path):
    writer = BackgroundWriter()
    writer.write_bytes(tmp_path / "missing" / "dir" / "\0bad", b"x")  # a NUL in a path: ValueError
    with pytest.raises(ValueError):
        writer.flush()
    writer.write_bytes(tmp_path / "ok.bin", b"ok")
    writer.close()
    assert (tmp_path / "ok.bin").read_bytes() == b"ok"
    failing = BackgroundWriter()
    failing.write_bytes(tmp_path / "\0bad", b"x")
    with pytest.raises(ValueError):
        failing.close()
    quiet = BackgroundWriter()
    quiet.write_bytes(tmp_path / "\0bad", b"x")
    quiet.close(raise_error=False)  # the run is failing already: its own error is the one to report


def test_a_finished_run_has_every_epochs_checkpoint_and_metrics(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--data-root", str(tiny_data), "-o", "dataset.verify=false",
                                      "--seed", "1",
                                      "--epochs", "3", "--visualizer", "none", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    import torch

    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["state"]["epoch"] == 3 and len(saved["state"]["history"]) == 3
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind
