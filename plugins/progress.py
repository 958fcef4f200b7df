"""tqdm progress bars, one per epoch."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


class ProgressBars:
    """A bar per epoch over its batches; the running loss and accuracy refresh
    every ``refresh`` seconds, since reading them waits for the device."""

    def __init__(self, *, leave: bool = False, refresh: float = 0.2, file=None) -> None:
        self.leave, self.refresh = leave, refresh
        self.file = file or sys.stderr
        self.bar = None
        self.epochs = 0
        self._last = 0.0

    def on_fit_start(self, event) -> None:
        self.epochs = event.epochs

    def on_batch_end(self, event) -> None:
        if self.bar is None:
            self.bar = tqdm(total=event.num_batches, desc=f"epoch {event.epoch}/{self.epochs}", unit="batch",
                            leave=self.leave, file=self.file, dynamic_ncols=True, disable=not _is_tty(self.file))
            self.bar.update(event.batch - 1)  # resumed mid-epoch
        self.bar.update(1)
        now = time.monotonic()
        if not self.bar.disable and now - self._last >= self.refresh:
            self._last = now
            self.bar.set_postfix(loss=f"{event.loss:.3f}", acc=f"{event.acc:.3f}", refresh=False)

    def on_epoch_end(self, event) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
