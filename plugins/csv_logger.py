"""The ``csv`` visualizer: ``metrics.csv``, one row per epoch, a column per metric
(Lightning's ``CSVLogger`` is the model)."""

from __future__ import annotations

import csv
import io
import pathlib
from typing import Any

from fmclf import atomic

from .metric_rows import cell, columns, scalars


class CsvLogger:
    """Keeps ``run_dir/filename`` equal to the run's history: after every epoch the file is
    rewritten atomically from every epoch so far, so a reader never sees half a row, a
    resumed run continues the file without a duplicate row, and a metric first seen in a
    later epoch gets its column (blank in the rows before it)."""

    def __init__(self, path: pathlib.Path, *, nested: bool = True) -> None:
        self.path = path
        self.nested = nested

    def on_fit_start(self, event: Any) -> None:
        if event.history:  # resumed: the epochs the checkpoint holds, whatever the file had
            self._write(event.history)

    def on_epoch_end(self, event: Any) -> None:
        self._write(event.history)

    def _write(self, history: list[dict[str, Any]]) -> None:
        rows = [scalars(row, nested=self.nested) for row in history]
        header = columns(rows)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([cell(row.get(key)) for key in header] for row in rows)
        atomic.write_text(self.path, out.getvalue())
