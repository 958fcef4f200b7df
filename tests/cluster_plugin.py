"""A visualizer for the cluster tests: ``hold-at`` waits at one batch until a file exists or a signal
comes, so a test can stop a node, or the comparison, while a run is known to be in the middle of an
epoch. Loaded as ``fmclf -p cluster_plugin`` with this folder on PYTHONPATH."""

from __future__ import annotations

import os
import pathlib
import select
import signal
import time

import fmclf


@fmclf.hookimpl
def register_visualizers(register):
    register("hold-at", hold_at, help="prints HELD at one batch and waits there until a file exists or a signal comes")


def hold_at(*, run_dir=None, epoch: int = 1, batch: int = 1, release: str = ""):
    """Options:
        epoch: the epoch
        batch: the batch after which to wait
        release: the file whose existence ends the wait (at most 120 s)
    """

    class HoldAt:
        def on_batch_end(self, event):
            if (event.epoch, event.batch) != (epoch, batch) or (release and pathlib.Path(release).exists()):
                return
            r, w = os.pipe()  # a signal arriving at any moment ends the wait (the wakeup fd records it)
            os.set_blocking(w, False)
            previous = signal.set_wakeup_fd(w)
            try:
                print("HELD", flush=True)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not (release and pathlib.Path(release).exists()):
                    if select.select([r], [], [], 0.2)[0]:
                        break
            finally:
                signal.set_wakeup_fd(previous)
                os.close(r)
                os.close(w)

    return HoldAt()
