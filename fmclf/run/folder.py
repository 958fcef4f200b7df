"""The run folder: what a run leaves behind, every file written atomically.

    config.toml     the resolved settings and what produced them (`--config` takes it back)
    metrics.jsonl   one JSON object per finished epoch
    checkpoint.pt   model, updater state, RNG states and progress, rewritten every epoch
    model.pt        the final weights (a state_dict)
    summary.json    the final metrics
"""

from __future__ import annotations

import json
import os
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
REPORT = "report.md"


def default_run_dir(model: str, loss: str, root: pathlib.Path = pathlib.Path("runs")) -> pathlib.Path:
    """``runs/YYYYmmdd-HHMMSS-MODEL-LOSS``: the name a run without ``--out`` asks for.
    :func:`create_new` with ``unique=True`` suffixes it ``-2``, ``-3`` ... when taken."""
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{loss}".replace(":", "_").replace("/", "_")
    return root / stem


def create_new(path: pathlib.Path, *, unique: bool = False) -> tuple[pathlib.Path, bool]:
    """Create the folder of a new run: ``(the folder, whether this call created it)``.

    With ``unique`` (a default name) the folder is made with ``os.mkdir``, which
    fails if the name exists, trying ``-2``, ``-3`` ... until one is made: two runs
    started in the same second can never get the same folder (checking first and
    creating after could). Without it ``path`` is the user's ``--out``: it may
    exist already, and :func:`check_new` decides whether it can take a run.
    """
    try:
        if not unique:
            existed = path.is_dir()
            path.mkdir(parents=True, exist_ok=True)
            return path, not existed
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate, n = path, 2
        while True:
            try:
                os.mkdir(candidate)
                return candidate, True
            except FileExistsError:
                candidate, n = path.with_name(f"{path.name}-{n}"), n + 1
    except OSError as exc:
        from ..atomic import advice

        raise UsageError(f"cannot create the run folder {str(path)!r}: {exc.strerror or exc}. "
                         f"{advice(exc, path)} Or choose another --out.") from None


def holds_run(path: pathlib.Path) -> bool:
    """Whether ``path`` already holds (part of) a run."""
    return any((path / name).exists() for name in (CONFIG, CHECKPOINT, METRICS, WEIGHTS))


def check_new(path: pathlib.Path) -> pathlib.Path:
    """Check, without creating anything, that ``path`` can take a new run: it does not exist,
    or it is an empty folder (one holding only a lock a killed run left is empty too).

    A folder holding anything else is refused, run or not: a run writes config.toml,
    report.md, pictures ... there, and a folder that is not a run may hold the user's
    own files of those names."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a folder. Choose another --out.")
    if not path.is_dir():
        return path
    if holds_run(path):
        raise UsageError(
            f"--out {str(path)!r} already holds a run. Continue it with `fmclf run --resume {shlex.quote(str(path))}`, "
            f"or choose another --out (leave it out for a fresh runs/... folder)."
        )
    try:
        others = sorted(name for name in os.listdir(path) if not is_own_leftover(name))
    except OSError as exc:
        raise UsageError(f"--out {str(path)!r} cannot be read ({exc.strerror or exc}). Choose another --out.") from None
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        raise UsageError(
            f"--out {str(path)!r} is a folder that already holds files ({shown}) but no fmclf run. A run writes "
            f"config.toml, metrics.jsonl, report.md, pictures and more into its folder and could overwrite yours, "
            f"so it takes only a new or empty folder: choose another --out (leave it out for a fresh runs/... folder)."
        )
    return path


def is_own_leftover(name: str) -> bool:
    """Whether a file named ``name`` is what fmclf itself leaves in a folder where no run started:
    a lock file, or the temporary of an atomic write a killed process left behind."""
    from ..atomic import is_temporary
    from .lock import NAME

    return name == NAME or is_temporary(name)


def prepare_new(path: pathlib.Path) -> pathlib.Path:
    """Check ``path`` can take a new run and create it."""
    check_new(path)
    return create_new(path)[0]


def write_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl with every finished epoch."""
    atomic.write_text(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history))


def mend_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl as ``history`` (a checkpoint's) unless it already says exactly that."""
    want = "".join(json.dumps(row) + "\n" for row in history).encode("utf-8")
    try:
        with open(run_dir / METRICS, "rb") as fh:
            same = fh.read(len(want) + 1) == want  # no more than that: the file may be anything now
    except OSError:
        same = False
    if not same:
        atomic.write_bytes(run_dir / METRICS, want)


def read_metrics(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when absent)."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(path: pathlib.Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def recorded_seconds(run_dir: pathlib.Path) -> float:
    """The training time summary.json records (0.0 when it cannot say)."""
    try:
        value = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8")).get("seconds", 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
