"""Finding run folders again: what ``fmclf runs`` lists. Reads files only (no torch).

A run's status comes from its lock (running), its summary (finished, or stopped by a callback), the
status.json its last session wrote (interrupted, diverged, failed), or else what is there (interrupted).
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import FmclfError
from . import folder
from .lock import holder

#: How deep below DIR run folders are looked for (``fmclf compare`` puts them in DIR/runs/).
MAX_DEPTH = 3


@dataclass
class RunInfo:
    """One run folder, as ``fmclf runs`` shows it."""

    path: str
    started: str  #: ISO time the run started ("" when not recorded)
    components: dict[str, str] = field(default_factory=dict)  #: kind (or visualizer.NAME) -> name
    epochs_done: int = 0
    epochs: int | None = None  #: asked for (None: unreadable config)
    test_acc: float | None = None  #: of the last finished epoch
    status: str = "interrupted"  #: or running, finished, stopped, diverged, failed, unreadable, damaged
    reason: str = ""  #: why it stopped, diverged or failed; who holds it while running

    def to_json(self) -> dict[str, Any]:
        """The record ``fmclf runs --json`` prints."""
        return asdict(self)


def _started(text: Any, path: pathlib.Path) -> tuple[float, str]:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S%z")), text
    except (TypeError, ValueError):
        stamp = path.stat().st_mtime
        return stamp, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp))


def describe(path: pathlib.Path) -> tuple[float, RunInfo]:
    """One run folder: ``(start time, info)``; a damaged folder is described, not raised on: a file
    that cannot be read, or is a link, FIFO or device (never followed), makes the row "damaged"."""
    try:
        return _describe(path)
    except (OSError, ValueError, FmclfError) as exc:
        return 0.0, RunInfo(str(path), "", status="damaged", reason=_why(exc))


def _why(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, FmclfError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def _describe(path: pathlib.Path) -> tuple[float, RunInfo]:
    info = RunInfo(str(path), "")
    try:
        config = folder.read_config_table(path)
    except (OSError, ValueError, FmclfError) as exc:  # absent, too large, not UTF-8, not TOML, too deep, a link
        config = {}
        info.status, info.reason = "unreadable", f"{folder.CONFIG}: {_why(exc)}"
    provenance = config.get("provenance") if isinstance(config.get("provenance"), dict) else {}
    when, info.started = _started(provenance.get("started", ""), path)
    components = provenance.get("components")
    if isinstance(components, dict):
        info.components = {t: str(c).split(" ")[0].split(":")[-1] for t, c in components.items()}
    else:
        info.components = {k: str(config[k]) for k in ("dataset", "model", "loss", "updater") if k in config}
    if isinstance(config.get("epochs"), int):
        info.epochs = config["epochs"]
    try:
        rows = folder.read_metrics(path)
    except (OSError, FmclfError) as exc:  # this row shows it; the other runs are listed as ever
        rows = []
        if info.status != "unreadable":
            info.status, info.reason = "damaged", _why(exc)
    info.epochs_done = len(rows)
    if rows and isinstance(rows[-1].get("test_acc"), (int, float)):
        info.test_acc = float(rows[-1]["test_acc"])
    live = holder(path)
    if info.status in ("unreadable", "damaged") and live is None:
        return when, info
    summary = folder.read_object(path / folder.SUMMARY) if (path / folder.WEIGHTS).exists() else None
    ended = folder.read_status(path)
    if live is not None:
        info.status, info.reason = "running", f"process {live.get('pid', '?')} on {live.get('host', '?')}"
    elif ended is not None and ended["status"] != "finished" and (summary is None or ended["epochs_done"] >= len(rows)):
        # a later session's ending (resumed past a finished run, then interrupted) beats an older summary
        info.status, info.reason = ended["status"], str(ended.get("reason", ""))
    elif summary is not None:
        stopped = summary.get("stopped")
        if isinstance(stopped, dict):
            info.status, info.reason = "stopped", f"by {stopped.get('by', '?')}: {stopped.get('reason', '')}"
        elif info.epochs is not None and info.epochs_done < info.epochs:
            info.status = "interrupted"  # --resume --epochs N asked for more, and ended before a summary
        else:
            info.status = "finished"
    return when, info


def _folders(root: pathlib.Path, depth: int) -> list[pathlib.Path]:
    if folder.is_run(root):
        return [root]
    if depth == 0:
        return []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [run for child in children for run in _folders(child, depth - 1)]


def find_runs(root: pathlib.Path) -> list[RunInfo]:
    """Every run folder at or below ``root`` (down to :data:`MAX_DEPTH`), newest first."""
    found = [describe(path) for path in _folders(pathlib.Path(root), MAX_DEPTH)]
    return [info for _, info in sorted(found, key=lambda pair: pair[0], reverse=True)]
