"""The ``tensorboard`` visualizer: TensorBoard event files in the run folder.

Every scalar is logged at the run's global step, the number of training
batches done (epoch ``e`` ends at step ``e * batches_per_epoch``), as
Lightning logs: epoch metrics under their own names (``train_loss``,
``test_acc``, ``per_class_test_acc/t-shirt``, any metric a plugin adds) plus
``epoch``, and every N batches the epoch's running ``batch/train_loss`` and
``batch/train_acc``. The run's configuration is a text, the weights are
histograms, the final test confusion matrix an image. One step scale for
every tag is what lets a resumed run purge, by step, what an interrupted
session wrote after its last checkpoint, so no step appears twice.
"""

from __future__ import annotations

import atexit
import pathlib
from typing import Any

from .metric_rows import scalars


def writer_class() -> Any:
    """torch's SummaryWriter, which needs the tensorboard package."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def _has_events(folder: pathlib.Path) -> bool:
    return folder.is_dir() and any(folder.glob("events.out.tfevents.*"))


class TensorBoardLogger:
    """Writes ``run_dir/log_dir``; ``every`` batches a running loss and accuracy (0: none)."""

    def __init__(self, folder: pathlib.Path, *, every: int = 50, histograms: bool = True,
                 confusion: bool = True) -> None:
        self.folder = folder
        self.every = every
        self.histograms = histograms
        self.confusion = confusion
        self.writer = None
        self.num_batches = 1
        self.config: dict[str, Any] = {}

    # The writer is opened at the first step this session logs: a resumed run that had
    # logged past its checkpoint purges those steps from there on.
    def _open(self, step: int) -> Any:
        if self.writer is None:
            resumed = _has_events(self.folder)
            self.writer = writer_class()(log_dir=str(self.folder), purge_step=step if resumed else None)
            atexit.register(self.close)  # an interrupted run still flushes what it logged
            if self.config:
                self.writer.add_text("config", _config_text(self.config), step)
        return self.writer

    def on_fit_start(self, event: Any) -> None:
        self.num_batches = max(int(event.num_batches), 1)
        self.config = dict(event.config or {})

    def on_batch_end(self, event: Any) -> None:
        if not self.every or event.batch % self.every:
            return
        step = (event.epoch - 1) * self.num_batches + event.batch
        writer = self._open(step)
        writer.add_scalar("batch/train_loss", event.loss, step)  # each read waits for the device: every N only
        writer.add_scalar("batch/train_acc", event.acc, step)

    def on_epoch_end(self, event: Any) -> None:
        step = event.epoch * self.num_batches
        writer = self._open(step)
        for tag, value in scalars(event.metrics).items():
            writer.add_scalar(tag, value, step)
        model = getattr(event, "model", None)  # events that carry the live model get its weights drawn
        if model is not None and self.histograms:
            self._histograms(model, step)
        writer.flush()

    def on_fit_end(self, event: Any) -> None:
        step = len(event.history) * self.num_batches
        writer = self._open(step)
        if self.histograms and event.model is not None:
            self._histograms(event.model, step)
        if self.confusion and event.confusion:
            writer.add_image("confusion", _confusion_image(event.confusion, event.classes), step, dataformats="HWC")
        self.close()

    def _histograms(self, model: Any, step: int) -> None:
        for name, param in model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            atexit.unregister(self.close)
            writer.close()


def _config_text(config: dict[str, Any]) -> str:
    """The run's settings as TOML, indented so TensorBoard's Markdown shows it as code."""
    from fmclf.run.config import dumps

    try:
        text = dumps(config)
    except TypeError:
        text = repr(config)
    return "\n".join("    " + line for line in text.strip().splitlines())


def _confusion_image(confusion: list[list[int]], classes: Any) -> Any:
    """The confusion matrix as fmclf draws it (confusion.png), as an RGB array."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fmclf.draw.pictures import confusion_figure

    figure = confusion_figure(confusion, list(classes))
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
