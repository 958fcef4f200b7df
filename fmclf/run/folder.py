"""The run folder: what a run leaves behind, every file written atomically.

    config.toml     the resolved settings and what produced them (`--config` takes it back)
    metrics.jsonl   one JSON object per finished epoch
    checkpoint.pt   model, updater state, RNG states and progress, rewritten every epoch
    model.pt        the final weights (a state_dict)
    summary.json    the final metrics
    status.json     how the last session ended: finished, interrupted, diverged or failed
    predictions.npy the test set's labels and the final model's predicted classes (2 rows of int16),
                    for fmclf compare's bootstrap over test examples
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import time
from typing import Any

from .. import atomic
from ..errors import CheckpointError, UsageError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
SUMMARY = "summary.json"
REPORT = "report.md"
STATUS = "status.json"
PREDICTIONS = "predictions.npy"

#: What status.json may say (``fmclf runs`` adds "running", from the lock, and "stopped", from the summary).
ENDINGS = ("finished", "interrupted", "diverged", "failed")


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


def metrics_text(history: list[dict[str, Any]]) -> str:
    """What metrics.jsonl holds: one JSON object a line, one line per finished epoch."""
    return "".join(json.dumps(row) + "\n" for row in history)


def write_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]], writer: Any = None) -> None:
    """Rewrite metrics.jsonl with every finished epoch (through ``writer``, a
    :class:`~fmclf.run.writer.BackgroundWriter`, when given)."""
    (writer or atomic).write_text(run_dir / METRICS, metrics_text(history))


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


#: The most metrics.jsonl may hold (some 600 bytes an epoch: over 400000 epochs).
METRICS_LIMIT = 256 * 2**20


def read_metrics(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when absent), each checked to be an epoch's row (see
    :func:`check_rows`); a file that is not is a :class:`~fmclf.errors.CheckpointError` naming it."""
    path = run_dir / METRICS
    if not path.exists():
        return []
    damaged = "It is damaged or was edited; restore it, or delete it (--resume rewrites it from the checkpoint)."
    try:
        text = atomic.read_limited(path, METRICS_LIMIT).decode("utf-8")
    except atomic.TooLarge:
        raise CheckpointError(f"{path} holds more than {METRICS_LIMIT // 2**20} MiB, far more than a run's "
                              f"metrics. {damaged}") from None
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not UTF-8 text (byte {exc.start}). {damaged}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}.") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise CheckpointError(f"{path}, line {number}, is not JSON ({exc}). {damaged}") from None
    why = check_rows(rows)
    if why:
        raise CheckpointError(f"{path}: {why}. {damaged}")
    return rows


#: The keys of a metrics row the core itself reads (every other key is read as any number would be).
CORE_KEYS = ("train_loss", "train_acc", "test_acc")


def check_rows(rows: Any) -> str | None:
    """Why ``rows`` is not a run's history (a list with one object per finished epoch, in order:
    ``epoch`` 1, 2, ..., the core's keys numbers, every other value plain data), or None."""
    if not isinstance(rows, list):
        return f"the history is {type(rows).__name__}, not a list of epochs"
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            return f"epoch {i}'s row is {_short(row)}, not an object"
        if row.get("epoch") != i or isinstance(row.get("epoch"), bool):
            return f"row {i} says epoch {_short(row.get('epoch'))}; the rows must be epochs 1, 2, 3 ... in order"
        for key in CORE_KEYS:
            if not _number(row.get(key)):
                return f"epoch {i}'s {key} is {_short(row.get(key))}, not a number"
        for key, value in row.items():
            if not isinstance(key, str) or not _plain(value):
                return f"epoch {i}'s {_short(key)} is {_short(value)}, not plain data"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth > 4:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def remove_temporaries(run_dir: pathlib.Path) -> None:
    """Remove the temporaries of atomic writes a killed process left (SIGKILL cannot be held back).
    Only by the folder's one writer: call it holding the lock."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return
    for name in names:
        if atomic.is_temporary(name):
            with contextlib.suppress(OSError):
                os.unlink(run_dir / name)


def read_json(path: pathlib.Path) -> Any:
    """The JSON a file holds (``{}`` when it is absent)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def read_summary(run_dir: pathlib.Path) -> dict[str, Any]:
    """summary.json ({} when absent or not a JSON object)."""
    try:
        data = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: pathlib.Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def recorded_seconds(run_dir: pathlib.Path) -> float:
    """The training time summary.json records (0.0 when it cannot say)."""
    try:
        value = json.loads(atomic.read_limited(run_dir / SUMMARY, 2**20)).get("seconds", 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def check_files(run_dir: pathlib.Path) -> None:
    """Refuse a run folder where one of fmclf's own files is a folder (or another non-file): a resume
    would train and then fail to write it."""
    for name in (CONFIG, METRICS, CHECKPOINT, WEIGHTS, SUMMARY, REPORT, STATUS, PREDICTIONS):
        path = run_dir / name
        if path.exists() and not path.is_file():
            raise CheckpointError(
                f"{path} is {'a folder' if path.is_dir() else 'not a regular file'}, where the run keeps its "
                f"{name}; nothing was changed. Move it out of {run_dir}, then resume again."
            )


def write_status(run_dir: pathlib.Path, status: str, epochs_done: int, reason: str = "") -> None:
    """Record how this session ended (one of :data:`ENDINGS`), for ``fmclf runs``. Best effort: a run
    folder that cannot take it loses nothing else (the run's own error is what the user needs)."""
    record = {"status": status, "epochs_done": epochs_done, "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if reason:
        record["reason"] = " ".join(reason.split())[:500]
    try:
        write_json(run_dir / STATUS, record)
    except OSError:
        pass


def write_predictions(run_dir: pathlib.Path, labels: Any, predicted: Any) -> None:
    """Write :data:`PREDICTIONS`: the test labels and the predicted classes (int16, one column per example)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.stack([np.asarray(labels), np.asarray(predicted)]).astype(np.int16), allow_pickle=False)
    atomic.write_bytes(run_dir / PREDICTIONS, buffer.getvalue())


def read_correct(run_dir: pathlib.Path) -> Any:
    """Whether the final model got each test example right (a bool array), from :data:`PREDICTIONS`;
    None when the run has none or it is unreadable."""
    import io

    import numpy as np

    try:
        data = np.load(io.BytesIO(atomic.read_limited(run_dir / PREDICTIONS, 64 * 2**20)), allow_pickle=False)
    except (OSError, ValueError):
        return None
    if data.ndim != 2 or data.shape[0] != 2:
        return None
    return data[0] == data[1]


def complete(run_dir: pathlib.Path) -> bool:
    """Whether ``run_dir`` holds a finished run: its final weights, summary and report are written, and its
    last session did not end otherwise (a stop while the pictures were drawn, a resume interrupted after an
    earlier finish). Anything less is resumed (``fmclf run --resume`` finishes what is missing)."""
    ended = read_status(run_dir)
    return (all((run_dir / name).is_file() for name in (WEIGHTS, SUMMARY, REPORT))
            and (ended is None or ended["status"] == "finished"))


def read_status(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """status.json, or None when it is absent or not one (runs older than it have none)."""
    try:
        data = json.loads((run_dir / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") in ENDINGS else None
