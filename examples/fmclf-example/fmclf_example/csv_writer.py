"""A visualizer that keeps a CSV copy of the run's metrics, one row per epoch."""

from __future__ import annotations

import csv
import io
import pathlib

from fmclf import atomic
from fmclf.run import folder


def columns(history: list[dict]) -> list[str]:
    """Every numeric key of the rows, in the order they first appear: whatever metrics a run records
    (valid_*, test_NAME of a --metric, lr) get a column, without a fixed list to keep up to date."""
    out: list[str] = []
    for row in history:
        for key, value in row.items():
            if key not in out and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(key)
    return out


class CsvMetrics:
    """Rewrites ``run_dir/filename`` after every epoch from the whole history.

    Rewriting (rather than appending) keeps the file right when a run is
    resumed, and :func:`fmclf.atomic.write_text` means a crash never leaves a
    half-written file: a reader sees the previous epoch's file or this one.
    """

    def __init__(self, run_dir: pathlib.Path | None, *, filename: str = "history.csv", per_class: bool = True) -> None:
        # the run folder gives the path, and refuses a name that is not plain or that fmclf writes itself
        self.path = folder.path_for(run_dir, filename, component="visualizer 'history-csv'", example="history.csv")
        self.per_class = per_class
        self.classes: list[str] = []

    def on_fit_start(self, event) -> None:
        self.classes = [str(c) for c in event.classes]
        if event.history:  # resumed: the file holds the epochs done so far
            self._write(event.history)

    def on_epoch_end(self, event) -> None:
        self._write(event.history)

    def _write(self, history: list[dict]) -> None:
        per_class = [f"test_acc_{c}" for c in self.classes] if self.per_class else []
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        names = columns(history)
        writer.writerow([*names, *per_class])
        for row in history:
            accs = row.get("per_class_test_acc", {})
            writer.writerow([row.get(c, "") for c in names]
                            + ([accs.get(c, "") for c in self.classes] if per_class else []))
        atomic.write_text(self.path, out.getvalue())
