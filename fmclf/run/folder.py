"""The run folder: what a run leaves behind, every file written atomically.

    config.toml     the resolved settings and what produced them (`--config` takes it back)
    metrics.jsonl   one JSON object per finished epoch
    checkpoint.pt   model, updater state, RNG states and progress, rewritten every epoch
    model.pt        the final weights (a state_dict)
    summary.json    the final metrics
"""

from __future__ import annotations

import json
import pathlib
import shlex
import time
from typing import Any

from .. import atomic
from ..errors import UsageError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
SUMMARY = "summary.json"


def default_run_dir(model: str, loss: str, root: pathlib.Path = pathlib.Path("runs")) -> pathlib.Path:
    """``runs/YYYYmmdd-HHMMSS-MODEL-LOSS``, suffixed ``-2``, ``-3`` ... if taken."""
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{loss}".replace(":", "_").replace("/", "_")
    path, n = root / stem, 2
    while path.exists():
        path, n = root / f"{stem}-{n}", n + 1
    return path


def holds_run(path: pathlib.Path) -> bool:
    """Whether ``path`` already holds (part of) a run."""
    return any((path / name).exists() for name in (CONFIG, CHECKPOINT, METRICS, WEIGHTS))


def check_new(path: pathlib.Path) -> pathlib.Path:
    """Check, without creating anything, that ``path`` can take a new run."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a folder. Choose another --out.")
    if path.is_dir() and holds_run(path):
        raise UsageError(
            f"--out {str(path)!r} already holds a run. Continue it with `fmclf run --resume {shlex.quote(str(path))}`, "
            f"or choose another --out (leave it out for a fresh runs/... folder)."
        )
    return path


def prepare_new(path: pathlib.Path) -> pathlib.Path:
    """Check ``path`` can take a new run and create it."""
    check_new(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the run folder {str(path)!r}: {exc.strerror or exc}. Choose another --out.") from None
    return path


def metrics_text(history: list[dict[str, Any]]) -> str:
    """What metrics.jsonl holds: one JSON object a line, one line per finished epoch."""
    return "".join(json.dumps(row) + "\n" for row in history)


def write_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]], writer: Any = None) -> None:
    """Rewrite metrics.jsonl with every finished epoch (through ``writer``, a
    :class:`~fmclf.run.writer.BackgroundWriter`, when given)."""
    (writer or atomic).write_text(run_dir / METRICS, metrics_text(history))


def read_metrics(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when absent)."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(path: pathlib.Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")
