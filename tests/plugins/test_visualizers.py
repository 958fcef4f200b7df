"""The built-in visualizers outside Jupyter: the animator's files, the progress output."""

from __future__ import annotations

import io
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")

import pytest

from fmclf.errors import OptionError
from fmclf.events import BatchEnd, EpochEnd, FitEnd, FitStart
from fmclf_plugins import visualizers
from fmclf_plugins.animator import Animator, in_jupyter
from fmclf_plugins.progress import ProgressBars

from picture_checks import assert_picture


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 0.45 + 0.3 / epoch, "train_acc": 0.75 + 0.01 * epoch,
            "test_acc": 0.74 + 0.01 * epoch, "per_class_test_acc": {}, "seconds": 0.1}


def _fit_start(epochs: int, history=(), num_batches: int = 5) -> FitStart:
    return FitStart(epochs=epochs, start_epoch=len(history) + 1, num_batches=num_batches, classes=["a", "b"],
                    device="cpu", run_dir=None, history=list(history))


class CountingBatch(BatchEnd):
    """A batch event that counts how often its (device-synchronising) metrics are read."""

    reads = 0

    @property
    def loss(self) -> float:
        CountingBatch.reads += 1
        return 0.5

    @property
    def acc(self) -> float:
        CountingBatch.reads += 1
        return 0.75


def _batches(epoch: int, n: int):
    return [CountingBatch(epoch, b, n, 10 * b, None, None) for b in range(1, n + 1)]


def test_animator_writes_the_textbook_curves_after_every_epoch(tmp_path):
    assert not in_jupyter()
    anim = visualizers.animator(run_dir=tmp_path)
    anim.on_fit_start(_fit_start(10))
    assert not (tmp_path / "curves.png").exists()
    history, frames = [], []
    for epoch in (1, 2, 3):
        history.append(_row(epoch))
        anim.on_epoch_end(EpochEnd(epoch, 10, history[-1], list(history)))
        frames.append((tmp_path / "curves.png").read_bytes())
        assert_picture(tmp_path / "curves.png", min_size=(450, 330))
        assert (tmp_path / "curves.svg").read_text().count("<svg") == 1
    ax = anim.ax
    assert ax.get_xlabel() == "epoch" and ax.get_xlim() == (1, 10) and ax.get_ylim() == (0.3, 0.9)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train loss", "train acc", "test acc"]
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1, 2, 3]] * 3
    assert len(set(frames)) == 3  # a new picture every epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]  # no temporary files


def test_animator_options_and_resume(tmp_path):
    anim = visualizers.animator(run_dir=tmp_path, svg=False, ylim_low=0.0, ylim_high=2.0)
    anim.on_fit_start(_fit_start(5, history=[_row(1), _row(2)]))  # resumed: earlier epochs drawn at once
    assert (tmp_path / "curves.png").exists() and not (tmp_path / "curves.svg").exists()
    assert anim.ax.get_ylim() == (0.0, 2.0)
    assert list(anim.ax.get_lines()[0].get_xdata()) == [1, 2]
    with pytest.raises(OptionError, match="ylim_low"):
        visualizers.animator(run_dir=tmp_path, ylim_low=0.9, ylim_high=0.3)


def test_animator_without_a_run_folder_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    anim = Animator(None)
    anim.on_fit_start(_fit_start(2))
    anim.on_epoch_end(EpochEnd(1, 2, _row(1), [_row(1)]))
    assert list(tmp_path.iterdir()) == []


def test_progress_off_a_terminal_writes_plain_lines_at_the_interval(monkeypatch):
    clock = iter(range(0, 1000, 4))  # every read of the clock moves time 4 s on
    monkeypatch.setattr("fmclf_plugins.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    bars = ProgressBars(interval=10.0, file=out)
    bars.on_fit_start(_fit_start(2, num_batches=12))
    for epoch in (1, 2):
        for event in _batches(epoch, 12):
            bars.on_batch_end(event)
        bars.on_epoch_end(EpochEnd(epoch, 2, _row(epoch), []))
    bars.on_fit_end(FitEnd([], {}, [], [], None, None))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 3 <= len(lines) <= 8, lines  # one line per ~10 s, not one per batch
    assert lines[0].startswith("epoch 1/2  batch ") and "loss 0.5000  acc 0.7500" in lines[0] and "batch/s" in lines[0]
    assert any(line.startswith("epoch 2/2") for line in lines)
    assert not any("batch 12/12" in line for line in lines)  # the runner's epoch line reports the end


def test_progress_off_a_terminal_is_quiet_for_fast_epochs():
    out = io.StringIO()
    bars = visualizers.tqdm_bars()
    bars.file = out
    bars.on_fit_start(_fit_start(1, num_batches=30))
    CountingBatch.reads = 0
    for event in _batches(1, 30):
        bars.on_batch_end(event)
    assert out.getvalue() == "" and CountingBatch.reads == 0  # and no device reads either


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_draws_a_bar_per_epoch_reading_metrics_at_a_human_rate():
    out = FakeTerminal()
    bars = ProgressBars(refresh=3600.0, leave=True, file=out)
    bars.on_fit_start(_fit_start(3, num_batches=50))
    CountingBatch.reads = 0
    for event in _batches(2, 50):
        bars.on_batch_end(event)
    bars.on_epoch_end(EpochEnd(2, 3, _row(2), []))
    text = out.getvalue()
    assert "epoch 2/3" in text and "50/50" in text and "\r" in text
    assert CountingBatch.reads == 0  # refresh not yet due: the device was never waited on
    bars = ProgressBars(refresh=0.0, leave=True, file=out)
    bars.on_fit_start(_fit_start(3, num_batches=4))
    for event in _batches(1, 4):
        bars.on_batch_end(event)
    bars.on_fit_end(FitEnd([], {}, [], [], None, None))
    assert "loss=0.500" in out.getvalue() and "acc=0.750" in out.getvalue()


def test_tqdm_option_errors():
    with pytest.raises(OptionError, match="interval"):
        visualizers.tqdm_bars(interval=-1.0)


def test_visualizer_modules_stay_light():
    """Choosing a visualizer by name must not import matplotlib or torch."""
    import subprocess

    code = "import fmclf_plugins.visualizers, sys; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_report_path_helpers_are_importable_without_matplotlib():
    import subprocess

    code = ("import fmclf.draw.report, fmclf.draw.gallery, fmclf.draw.pictures, sys; "
            "print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).parents[1]).stdout.split()
    assert out == ["False", "False"]
