"""Progress per epoch: a tqdm bar on a terminal or in Jupyter, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import IO

from fmclf.interactive import in_jupyter


class ProgressBars:
    """A bar per epoch over its batches, titled ``epoch E/N``, with the running loss and
    accuracy refreshed every ``refresh`` seconds (reading them waits for the device).

    When the stream is not a terminal (a log file, CI, a pipe) a bar would fill it
    with carriage returns and escape codes; then a plain line is written at most
    every ``interval`` seconds instead, so a slow epoch still shows it is alive.
    """

    def __init__(self, *, leave: bool = False, refresh: float = 0.2, interval: float = 10.0,
                 file: IO | None = None) -> None:
        self.leave, self.refresh, self.interval = leave, refresh, interval
        self.file = file or sys.stderr
        self.bars = _is_tty(self.file) or in_jupyter()
        self.bar = None
        self.epochs = 0
        self._last = 0.0
        self._epoch_started = 0.0
        self._first_batch = 0

    def on_fit_start(self, event) -> None:
        self.epochs = event.epochs
        self._last = time.monotonic()

    def on_batch_end(self, event) -> None:
        if self.bars:
            self._bar(event)
        else:
            self._line(event)

    def _bar(self, event) -> None:
        if self.bar is None:
            self.bar = _tqdm_class()(total=event.num_batches, desc=f"epoch {event.epoch}/{self.epochs}", unit="batch",
                            leave=self.leave, file=self.file, dynamic_ncols=True)
            self.bar.update(event.batch - 1)  # resumed mid-epoch
        self.bar.update(1)
        now = time.monotonic()
        if now - self._last >= self.refresh:
            self._last = now
            self.bar.set_postfix(loss=f"{event.loss:.3f}", acc=f"{event.acc:.3f}", refresh=False)

    def _line(self, event) -> None:
        now = time.monotonic()
        if self._epoch_started == 0.0:
            self._epoch_started, self._first_batch = now, event.batch - 1
        if now - self._last < self.interval or event.batch == event.num_batches:
            return  # the epoch's own line (printed by the runner) reports its end
        self._last = now
        rate = (event.batch - self._first_batch) / max(now - self._epoch_started, 1e-9)
        width = len(str(event.num_batches))
        print(
            f"epoch {event.epoch:>{len(str(self.epochs))}}/{self.epochs}  "
            f"batch {event.batch:>{width}}/{event.num_batches} "
            f"({100 * event.batch // event.num_batches:>2}%)  loss {event.loss:.4f}  acc {event.acc:.4f}  "
            f"{rate:.1f} batch/s",
            file=self.file, flush=True,
        )

    def on_epoch_end(self, event) -> None:
        self._close()
        self._epoch_started = 0.0

    def on_fit_end(self, event) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _tqdm_class():
    """The notebook widget bar in Jupyter when ipywidgets is installed; else the text bar
    (a notebook renders its carriage returns, and tqdm.auto would warn about the widgets)."""
    if in_jupyter():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm

            return tqdm
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
