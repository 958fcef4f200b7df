"""The run folder: what a run leaves behind, every file written atomically.

    config.toml     the resolved settings and what produced them (`--config` takes it back)
    metrics.jsonl   one JSON object per finished epoch
    checkpoint.pt   model, updater state, RNG states and progress, rewritten every epoch
    model.pt        the final weights (a state_dict)
    summary.json    the final metrics
"""

from __future__ import annotations

import io
import json
import pathlib
import shlex
import time
import warnings
from typing import Any

from . import atomic
from .errors import CheckpointError, UsageError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
SUMMARY = "summary.json"
CHECKPOINT_FORMAT = "fmclf-checkpoint/1"


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


def write_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl with every finished epoch."""
    atomic.write_text(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history))


def read_metrics(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when absent)."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(path: pathlib.Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def save_torch(path: pathlib.Path, obj: Any) -> None:
    """``torch.save`` through a temporary file, fsync and rename."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic.write_bytes(path, buf.getvalue())


_DAMAGED = "It is damaged or truncated, or was not written by fmclf. Start a new run, or restore the file from a backup."


def load_torch(path: pathlib.Path, what: str) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never code."""
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise CheckpointError(f"{path}: no {what} here{' (it is a folder)' if path.is_dir() else ''}.")
    try:
        with warnings.catch_warnings():  # torch's warnings about odd pickles; the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        refused = next((line for line in lines if "GLOBAL" in line), None)
        if refused is None:  # not an object it refused: bytes that are no pickle at all
            why = next((line for line in lines if line.startswith("Unsupported")), "not a file torch.save wrote")
            raise CheckpointError(f"{path}: the {what} cannot be loaded ({why[:200]}). {_DAMAGED}") from None
        raise CheckpointError(
            f"{path}: the {what} cannot be loaded: it holds Python objects other than tensors and plain data "
            f"({refused[:300]}), and unpickling such objects can run arbitrary code, so fmclf refuses. It was "
            f"not written by fmclf, or it was tampered with. Start a new run, or restore the file from a backup."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, TypeError, KeyError, IndexError) as exc:
        first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: the {what} cannot be loaded ({first[:300]}). {_DAMAGED}") from None
