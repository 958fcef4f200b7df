"""The run folder: the one owner of every file a run leaves behind (:data:`FILES`) and of how each is
opened (:func:`fmclf.atomic.open_owned`, read within a bound, written atomically). Plugins ask
:func:`path_for` for a path, and cannot take a name listed here.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import pathlib
import shlex
import stat
import time
from dataclasses import dataclass
from typing import Any

from .. import atomic
from ..errors import CheckpointError, OptionError, UsageError
from ..numbers import is_number, is_whole
from ..wording import current, flag
from .processes import resume_command

MiB = 2**20
#: The most metrics.jsonl may hold (some 600 bytes an epoch: over 400000 epochs).
METRICS_LIMIT = 256 * MiB
#: The most read back of a file of fmclf's that has no limit of its own in :data:`FILES` (compare's records).
OTHER_LIMIT = 64 * MiB


@dataclass(frozen=True)
class File:
    """One file fmclf keeps in a run folder."""

    name: str
    holds: str  #: what it holds, for messages and docs
    limit: int | None = None  #: the most fmclf reads back, in bytes (None: never read back, or weights: any size)


CONFIG, METRICS, CHECKPOINT, WEIGHTS, BEST = "config.toml", "metrics.jsonl", "checkpoint.pt", "model.pt", "best.pt"
SUMMARY, STATUS, LOCK, REPORT = "summary.json", "status.json", ".lock", "report.md"
CURVES, CURVES_SVG, METRICS_PNG, CONFUSION, PREDICTIONS = (
    "curves.png", "curves.svg", "metrics.png", "confusion.png", "predictions.png")
TEST_PREDICTIONS = "predictions.npy"
#: Every file of a run folder, by name: the one table (older run folders use the same names).
FILES = {f.name: f for f in (
    File(CONFIG, "the resolved settings and what produced them (`--config` takes it back)", MiB),
    File(METRICS, "one JSON object per finished epoch", METRICS_LIMIT),
    File(CHECKPOINT, "model, updater state, RNG states and progress, rewritten every epoch"),
    File(WEIGHTS, "the final weights (a state_dict)"),
    File(BEST, "the best weights by a monitored metric (callback best)"),
    File(SUMMARY, "the final metrics", 64 * MiB),
    File(STATUS, "how the last session ended: finished, interrupted, diverged or failed", MiB),
    File(LOCK, "who writes the folder now (one writer at a time)", 64 * 2**10),
    File(REPORT, "the report: settings, tables, pictures"),
    File(CURVES, "the training curves (animator, report)"),
    File(CURVES_SVG, "the training curves as SVG (animator)"),
    File(METRICS_PNG, "every metric and the learning rate, per epoch (report)"),
    File(CONFUSION, "the test confusion matrix (report)"),
    File(PREDICTIONS, "predictions on the first test images (report, predict)"),
    File(TEST_PREDICTIONS, "the test labels and the final model's predicted classes (2 rows of int16), for fmclf "
                           "compare's bootstrap over test examples", 64 * MiB),
)}


def owns(name: str) -> bool:
    """Whether fmclf itself writes a file called ``name`` in a run folder: one of :data:`FILES`, or a temporary."""
    return name in FILES or atomic.is_temporary(name)


def path_for(run_dir: pathlib.Path | str | None, name: str, *, component: str, option: str = "filename",
             example: str = "") -> pathlib.Path:
    """The path of a plugin's own file ``name`` in ``run_dir`` (``component`` such as "visualizer 'csv'",
    ``option`` the option that named it, ``example`` a good name). An :class:`~fmclf.errors.OptionError`
    (exit 2, before any work) for no run folder, a name that is no plain name, or one fmclf owns."""
    if run_dir is None:
        raise OptionError(f"{component} writes into the run folder, and it was given none (run_dir=None).")
    such = f", such as {example}" if example else ""
    if pathlib.PurePath(name).name != name or name in ("", ".", ".."):
        raise OptionError(f"option {option} of {component} must be a plain name inside the run folder{such}; "
                          f"got {name!r}.")
    if owns(name):
        raise OptionError(f"option {option} of {component} must not be {name!r}: fmclf writes that file itself "
                          f"(its own files: {', '.join(FILES)}). Choose another name{such}.")
    return pathlib.Path(run_dir) / name


def check_options(options: dict[str, dict[str, Any]], kinds: dict[str, str],
                  run_dir: pathlib.Path | None = None) -> None:
    """Refuse, before any work, a string option of a component that gets the run folder (``kinds``: each
    option target's kind) naming a file fmclf owns there: ``status.json``, ``./logs/../status.json``, or,
    given ``run_dir``, an absolute path into it."""
    from ..kinds import core_params

    for target, values in options.items():
        if "run_dir" not in core_params(kinds.get(target, target.split(".")[0])):
            continue
        for option, value in values.items():
            if isinstance(value, str) and _lands_on_owned(value, run_dir):
                kind, _, name = target.partition(".")
                raise OptionError(f"option {option} of {kind} {name or kind!r} is {value!r}: that is "
                                  f"{os.path.basename(value)} in the run folder, and fmclf writes that file itself "
                                  f"(its own files: {', '.join(FILES)}). Choose another name.")


def _lands_on_owned(value: str, run_dir: pathlib.Path | None) -> bool:
    path = os.path.normpath(value)
    if not os.path.isabs(path):
        return os.sep not in path and owns(path)
    return (run_dir is not None and os.path.dirname(path) == os.path.normpath(os.path.abspath(run_dir))
            and owns(os.path.basename(path)))


def read_owned(path: pathlib.Path, limit: int | None = None) -> bytes:
    """The bytes of one of fmclf's files in a run or comparison folder, opened by
    :func:`fmclf.atomic.open_owned` and read within its limit in :data:`FILES` (or ``limit``)."""
    row = FILES.get(path.name)
    cap = limit if limit is not None else (row.limit if row and row.limit else OTHER_LIMIT)
    return atomic.read_limited(path, cap, owned=True)


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, where nesting too deep for the parser is a ``ValueError`` like any other bad JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_config(run_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A run folder's config.toml as ``(settings, options)``, checked (:func:`fmclf.run.config.load_config`)."""
    from .config import load_config

    return load_config(pathlib.Path(run_dir) / CONFIG, owned=True)


def read_config_table(run_dir: pathlib.Path) -> dict[str, Any]:
    """A run folder's config.toml as the TOML table it holds, unchecked (for what only shows it).
    Raises ``OSError`` or ``ValueError`` (too large, not UTF-8, not TOML, too deep)."""
    from .config import parse_toml

    return parse_toml(read_owned(pathlib.Path(run_dir) / CONFIG).decode("utf-8"))


#: What status.json may say (``fmclf runs`` adds "running", from the lock, and "stopped", from the summary).
ENDINGS = ("finished", "interrupted", "diverged", "failed")


def default_run_dir(model: str, loss: str, root: pathlib.Path = pathlib.Path("runs")) -> pathlib.Path:
    """``runs/YYYYmmdd-HHMMSS-MODEL-LOSS``: the name a run without ``--out`` asks for."""
    return root / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{loss}".replace(":", "_").replace("/", "_")


def create_new(path: pathlib.Path, *, unique: bool = False) -> tuple[pathlib.Path, bool]:
    """Create the folder of a new run: ``(the folder, whether this call created it)``. With ``unique`` (a default
    name) ``os.mkdir``, which fails if the name exists, tries ``-2``, ``-3`` ...: two runs started in the same
    second never share a folder. Without it ``path`` is the user's ``--out``, which may exist."""
    try:
        if not unique:
            existed = path.is_dir()
            path.mkdir(parents=True, exist_ok=True)
            return path, not existed
        path.parent.mkdir(parents=True, exist_ok=True)
        for candidate in itertools.chain([path], (path.with_name(f"{path.name}-{n}") for n in itertools.count(2))):
            with contextlib.suppress(FileExistsError):
                os.mkdir(candidate)
                return candidate, True
    except OSError as exc:
        raise UsageError(f"cannot create the run folder {str(path)!r}: {exc.strerror or exc}. "
                         f"{atomic.advice(exc, path)} Or choose another {flag('out')}.") from None


def holds_run(path: pathlib.Path) -> bool:
    """Whether ``path`` already holds (part of) a run."""
    return any((path / name).exists() for name in (CONFIG, CHECKPOINT, METRICS, WEIGHTS))


def is_run(path: pathlib.Path) -> bool:
    """Whether ``path`` is a run folder: it holds the run's settings (config.toml), so it can be resumed,
    listed and shown (:func:`holds_run` also counts what a run writes later, which a new run must not overwrite)."""
    return (pathlib.Path(path) / CONFIG).is_file()


def new_run_command(run_dir: pathlib.Path, more: str = "") -> str:
    """The command that starts a new run from the settings ``run_dir`` recorded (``more``: flags to add),
    for messages that offer it instead of resuming."""
    return f"fmclf run --config {shlex.quote(str(pathlib.Path(run_dir) / CONFIG))}{more}"


def check_resumable(run_dir: pathlib.Path) -> None:
    """Refuse, in the front end's words, a folder to resume that holds no run (`fmclf run --resume`, its
    ``--dry-run`` and ``fmclf.fit(resume=)`` all ask here)."""
    if not is_run(run_dir):
        fit = ", or the run_dir a fit returned" if current().python else ""
        raise UsageError(f"{flag('resume', run_dir, quoted=True)} is not a run folder (no {CONFIG}). Pass the folder "
                         f"a run printed at its start{fit}.")


def check_new(path: pathlib.Path) -> pathlib.Path:
    """Check, creating nothing, that ``path`` can take a new run: it does not exist, or is empty (but for
    what fmclf leaves, :func:`is_own_leftover`). Anything else is refused, run or not: the user's own
    files may have the names a run writes."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag('out', path, quoted=True)} is a file, not a folder. Choose another {flag('out')}.")
    if not path.is_dir():
        return path
    if holds_run(path):
        raise UsageError(f"{flag('out', path, quoted=True)} already holds a run. Continue it with "
                         f"`{resume_command(path)}`, or choose another {flag('out')} (leave it out for a fresh "
                         f"runs/... folder).")
    try:
        others = sorted(name for name in os.listdir(path) if not is_own_leftover(name))
    except OSError as exc:
        raise UsageError(f"{flag('out', path, quoted=True)} cannot be read ({exc.strerror or exc}). "
                         f"Choose another {flag('out')}.") from None
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        raise UsageError(f"{flag('out', path, quoted=True)} is a folder that already holds files ({shown}) but no "
                         f"fmclf run. A run writes config.toml, metrics.jsonl, report.md, pictures and more into its "
                         f"folder and could overwrite yours, so it takes only a new or empty folder: choose another "
                         f"{flag('out')} (leave it out for a fresh runs/... folder).")
    return path


def is_own_leftover(name: str) -> bool:
    """Whether ``name`` is what fmclf leaves in a folder where no run started: a lock, or a killed write's temporary."""
    return name == LOCK or atomic.is_temporary(name)


def metrics_text(history: list[dict[str, Any]]) -> str:
    """What metrics.jsonl holds: one JSON object a line, one line per finished epoch."""
    return "".join(json.dumps(row) + "\n" for row in history)


def write_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]], writer: Any = None) -> None:
    """Rewrite metrics.jsonl with every finished epoch (through ``writer``, a
    :class:`~fmclf.run.writer.BackgroundWriter`, when given)."""
    (writer or atomic).write_text(run_dir / METRICS, metrics_text(history))


def mend_metrics(run_dir: pathlib.Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl as ``history`` (a checkpoint's) unless it already says exactly that."""
    want = metrics_text(history).encode("utf-8")
    try:
        same = read_owned(run_dir / METRICS, len(want)) == want  # no more than that: the file may be anything now
    except (OSError, atomic.TooLarge):
        same = False
    if not same:
        atomic.write_bytes(run_dir / METRICS, want)


def read_metrics(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when absent), checked (:func:`check_rows`: else a CheckpointError)."""
    path = run_dir / METRICS
    damaged = "It is damaged or was edited; restore it, or delete it (--resume rewrites it from the checkpoint)."
    try:
        text = read_owned(path).decode("utf-8")
    except FileNotFoundError:
        return []
    except atomic.TooLarge:
        raise CheckpointError(f"{path} holds more than {METRICS_LIMIT // 2**20} MiB, far more than a run's "
                              f"metrics. {damaged}") from None
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not UTF-8 text (byte {exc.start}). {damaged}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}.") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            if line.strip():
                rows.append(parse_json(line))
        except ValueError as exc:
            raise CheckpointError(f"{path}, line {number}, is not JSON ({exc}). {damaged}") from None
    if why := check_rows(rows):
        raise CheckpointError(f"{path}: {why}. {damaged}")
    return rows


#: The keys of a metrics row the core itself reads (every other key is read as any number would be).
CORE_KEYS = ("train_loss", "train_acc", "test_acc", "seconds")


def check_rows(rows: Any) -> str | None:
    """Why ``rows`` is not a run's history (a list with one object per finished epoch, in order:
    ``epoch`` 1, 2, ..., the core's keys numbers, every other value plain data), or None."""
    if not isinstance(rows, list):
        return f"the history is {type(rows).__name__}, not a list of epochs"
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            return f"epoch {i}'s row is {short(row)}, not an object"
        if row.get("epoch") != i or isinstance(row.get("epoch"), bool):
            return f"row {i} says epoch {short(row.get('epoch'))}; the rows must be epochs 1, 2, 3 ... in order"
        for key in CORE_KEYS:
            if not is_number(row.get(key)):
                return f"epoch {i}'s {key} is {short(row.get(key))}, not a number"
        for key, value in row.items():
            if not isinstance(key, str) or not is_plain(value, depth=4):
                return f"epoch {i}'s {short(key)} is {short(value)}, not plain data"
    return None


def is_plain(value: Any, *, leaves: tuple[type, ...] = (), keys: tuple[type, ...] = (str,),
             depth: float = math.inf) -> bool:
    """Whether ``value`` is plain data: None, booleans, numbers, text (and ``leaves``) in lists, tuples and
    dicts keyed by ``keys``, containers nested at most ``depth`` + 1 deep."""
    if value is None or isinstance(value, (bool, int, float, str, *leaves)):
        return True
    if depth < 0:
        return False
    if isinstance(value, (list, tuple)):
        return all(is_plain(v, leaves=leaves, keys=keys, depth=depth - 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, keys) and is_plain(v, leaves=leaves, keys=keys, depth=depth - 1)
                   for k, v in value.items())
    return False


def as_plain(value: Any) -> Any:
    """``value`` as plain data (lists, dicts keyed by text), anything else in it (a date TOML read, a path) as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): as_plain(v) for k, v in value.items()}
    return str(value)


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def remove_temporaries(run_dir: pathlib.Path) -> None:
    """Remove the temporaries of atomic writes a killed process left; call it holding the folder's lock."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return
    for name in names:
        if atomic.is_temporary(name):
            with contextlib.suppress(OSError):
                os.unlink(run_dir / name)


def read_json(path: pathlib.Path) -> Any:
    """The JSON one of fmclf's files holds (``{}`` when absent), by :func:`read_owned`; bad JSON is a ``ValueError``."""
    try:
        data = read_owned(path)
    except FileNotFoundError:
        return {}
    return parse_json(data)


def read_object(path: pathlib.Path) -> dict[str, Any] | None:
    """The JSON object one of fmclf's files holds, or None when it is absent, unreadable, too large, not JSON
    or not an object (for what only shows it). A link, FIFO or device is still a RefusedFile."""
    try:
        data = parse_json(read_owned(path))
    except (OSError, ValueError):  # absent, unreadable, too large (TooLarge), not UTF-8 or not JSON
        return None
    return data if isinstance(data, dict) else None


def read_summary(run_dir: pathlib.Path) -> dict[str, Any]:
    """summary.json ({} when absent or not a JSON object)."""
    return read_object(run_dir / SUMMARY) or {}


def write_json(path: pathlib.Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def recorded_seconds(run_dir: pathlib.Path) -> float:
    """The training time summary.json records (0.0 when it cannot say)."""
    value = read_summary(run_dir).get("seconds", 0.0)
    return float(value) if is_number(value) else 0.0


def check_files(run_dir: pathlib.Path) -> None:
    """Refuse, before anything is read or rewritten, a run folder where one of :data:`FILES` is a link, FIFO,
    device or socket (a RefusedFile), or a folder (a resume would train, then fail to write it)."""
    for name in FILES:
        path = run_dir / name
        try:
            mode = os.lstat(path).st_mode
        except OSError:  # absent (or unreadable: the read itself says so)
            continue
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"{path} is a folder, where the run keeps its {name}; nothing was changed. Move it "
                                  f"out of {run_dir}, then try again.")
        if not stat.S_ISREG(mode):
            raise atomic.refused(path, atomic.kind_of(mode))


def write_status(run_dir: pathlib.Path, status: str, epochs_done: int, reason: str = "") -> None:
    """Record how this session ended (one of :data:`ENDINGS`), for ``fmclf runs``. Best effort: a run
    folder that cannot take it loses nothing else (the run's own error is what the user needs)."""
    record = {"status": status, "epochs_done": epochs_done, "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if reason:
        record["reason"] = " ".join(reason.split())[:500]
    with contextlib.suppress(OSError):
        write_json(run_dir / STATUS, record)


def write_predictions(run_dir: pathlib.Path, labels: Any, predicted: Any) -> None:
    """Write :data:`TEST_PREDICTIONS`: the test labels and the predicted classes (int16, one column per example)."""
    import numpy as np

    table = np.stack([np.asarray(labels), np.asarray(predicted)]).astype(np.int16)
    atomic.write_with(run_dir / TEST_PREDICTIONS, lambda fh: np.save(fh, table, allow_pickle=False))


def read_correct(run_dir: pathlib.Path) -> Any:
    """Whether the final model got each test example right (a bool array), from :data:`TEST_PREDICTIONS`;
    None when the run has none or it is unreadable."""
    import numpy as np

    try:
        data = np.load(io.BytesIO(read_owned(run_dir / TEST_PREDICTIONS)), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return data[0] == data[1] if data.ndim == 2 and data.shape[0] == 2 else None


def complete(run_dir: pathlib.Path) -> bool:
    """Whether ``run_dir`` holds a finished run: its final weights, summary and report are written, and its
    last session did not end otherwise (a stop while drawing, a resume interrupted after a finish)."""
    ended = read_status(run_dir)
    return (all((run_dir / name).is_file() for name in (WEIGHTS, SUMMARY, REPORT))
            and (ended is None or ended["status"] == "finished"))


def read_status(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """status.json, or None when it is absent or is not a known ending with a whole number of epochs done."""
    data = read_object(run_dir / STATUS)
    if data is None or data.get("status") not in ENDINGS:
        return None
    done = data.get("epochs_done")
    return data if is_whole(done) and done >= 0 else None
