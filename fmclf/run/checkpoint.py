"""Checkpoints and final weights: the schema, writing, reading, checking, restoring.

A checkpoint is one ``torch.save``d dict, written atomically after every
epoch (and when a run is stopped mid-epoch)::

    format      "fmclf-checkpoint/1"
    model       the model's state_dict
    updater     the updater's state_dict, or None when it has none
    scheduler   the LR scheduler's state_dict (an updater that returned (optimizer, scheduler)), or None
    callbacks   {"callback.NAME": state_dict} for each callback with state_dict()/load_state_dict()
    rng         the torch (CPU, and CUDA when used) and Python RNG states
    state       the TrainState: epochs done, batches into the next, partial sums, history, a
                callback's stop ({"by", "reason", "epoch"}, or None) and the rate a callback set (or None)
    world_size  how many processes trained it (a run resumes with as many)

Everything is read back with ``weights_only=True`` (tensors and plain data, never code): a callback
whose state holds anything else is refused when the checkpoint is written. Checkpoints older than
``scheduler`` and ``callbacks`` read them back as None and {}.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import pathlib
import pickle
import random
import warnings
import zipfile
from typing import Any

from .. import atomic
from ..errors import CheckpointError, ComponentError, DivergenceError
from ..host.registry import ComponentRecord
from ..kinds import BY_NAME
from ..numbers import is_number, is_whole
from ..train.blame import blame, component_fault, describe
from ..train.engine import Parts, TrainState
from ..train.updaters import change_lr, scheduler_of
from ..wording import flag
from . import folder, processes

FORMAT = "fmclf-checkpoint/1"

def save_torch(path: pathlib.Path, obj: Any, writer: Any = None) -> None:
    """``torch.save``, atomically; by ``writer`` (a :class:`~fmclf.run.writer.BackgroundWriter`) when given."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    (writer or atomic).write_bytes(path, buf.getvalue())


def load_torch(path: pathlib.Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` of a file opened by :func:`fmclf.atomic.open_owned`."""
    import torch

    try:
        fh = os.fdopen(atomic.open_owned(path), "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {what} here.") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}.") from None
    try:
        with fh, warnings.catch_warnings():  # torch's warnings about odd pickles; the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        refused = next((line for line in lines if "GLOBAL" in line), None)
        if refused is not None:
            raise CheckpointError(f"{path}: the {what} cannot be loaded: it holds Python objects other than tensors "
                                  f"and plain data ({refused[:300]}), and unpickling such objects can run arbitrary "
                                  f"code, so fmclf refuses. It was not written by fmclf, or it was tampered with. "
                                  f"Start a new run, or restore the file from a backup.") from None
        # not an object it refused: bytes that are no pickle at all
        why = next((line for line in lines if line.startswith("Unsupported")), "not a file torch.save wrote")[:200]
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, TypeError, KeyError,
            IndexError) as exc:
        why = (str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__)[:300]
    raise CheckpointError(f"{path}: the {what} cannot be loaded ({why}). It is damaged or truncated, or was not "
                          f"written by fmclf. Start a new run, or restore the file from a backup.")


def rng_state() -> dict[str, Any]:
    """The random number generators' states: torch's CPU (and CUDA, once used) and Python's."""
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` recorded."""
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all(state["cuda"])


def check_weights(parts: Parts, state: TrainState) -> None:
    """Refuse to checkpoint weights that are inf or nan: the last good checkpoint stays."""
    import torch

    params = [p.detach() for p in parts.model.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        epoch = state.epoch if state.batch == 0 else state.epoch + 1
        raise DivergenceError(weights_overflowed(epoch), epoch=epoch, batch=state.batch or None)


def weights_overflowed(epoch: int) -> str:
    """What a run says when its weights became inf or nan in ``epoch`` while every batch loss was finite."""
    return (f"training diverged: the model's weights became inf or nan in epoch {epoch} although every batch "
            f"loss was finite (an update overflowed). Try a smaller {flag('lr')}.")


def global_state(state: TrainState, comm: Any) -> dict[str, Any]:
    """``state`` as a checkpoint keeps it: an unfinished epoch's partial sums added up over the processes."""
    import torch

    saved = dataclasses.asdict(state)
    if state.batch and comm.world_size > 1:
        sums = comm.sum(torch.tensor([state.loss_sum, state.correct, state.examples], dtype=torch.float64))
        saved.update(loss_sum=float(sums[0]), correct=int(sums[1]), examples=int(sums[2]))
    return saved


def keeps(value: Any) -> bool:
    """Whether ``weights_only=True`` reads ``value`` back: tensors, bytes, numbers, strings and containers of them."""
    import torch

    return folder.is_plain(value, leaves=(bytes, torch.Tensor), keys=(str, int))


def callback_states(parts: Parts) -> dict[str, Any]:
    """Each callback's ``state_dict()``, by option target; one that is no plain data is its fault."""
    out = {}
    for record, callback in parts.callbacks:
        if not all(callable(getattr(callback, m, None)) for m in ("state_dict", "load_state_dict")):
            continue
        with blame(record, "in state_dict()"):
            state = callback.state_dict()
        check_state(record, state)
        out[BY_NAME["callback"].target(record.name)] = state
    return out


def check_state(record: ComponentRecord | str, state: Any) -> None:
    """Refuse, as a :class:`~fmclf.errors.ComponentError` naming the callback (``record``: a ComponentRecord, or a
    plain description), a ``state_dict()`` a checkpoint cannot keep: no plain data (:func:`keeps`), or no
    :func:`round_trip`. What every checkpoint asks of a callback's state, callable alone (a plugin's own tests)."""
    try:
        plain = keeps(state)
    except RecursionError:  # nested too deep to look through: the round trip below says so
        plain = True
    if not plain:
        raise ComponentError(f"{describe(record)}: state_dict() returned {type(state).__name__} holding "
                             f"objects other than tensors, numbers, strings, lists and dicts; a checkpoint keeps "
                             f"only those (it is read back with weights_only=True). Return plain data from "
                             f"state_dict().")
    round_trip(record, state)


#: The most a callback's state may take in a checkpoint, written after every epoch.
MAX_CALLBACK_STATE = 64 * 2**20


def round_trip(record: ComponentRecord | str, state: Any) -> None:
    """Save ``state`` and read it back as ``--resume`` would: what passes the type check but cannot make that trip
    (an IntEnum, a dict subclass holding a lambda, a tensor subclass, deep nesting) or is too big is refused now,
    naming the callback, rather than in a checkpoint ``--resume`` would refuse."""
    import torch

    who = describe(record)
    buf = io.BytesIO()
    try:
        torch.save(state, buf)
        size = buf.tell()
        if size <= MAX_CALLBACK_STATE:
            buf.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.load(buf, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever stops the trip is the state's
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ComponentError(f"{who}: the state its state_dict() returned cannot be saved in a checkpoint and read "
                             f"back ({type(exc).__name__}: {why}). A checkpoint keeps plain tensors, numbers, strings, "
                             f"lists and dicts (read back with weights_only=True): return those from state_dict(), not "
                             f"subclasses of them (an IntEnum, a defaultdict, a tensor subclass). This is a fault in "
                             f"that callback; report it to its authors.") from exc
    if size > MAX_CALLBACK_STATE:
        raise ComponentError(f"{who}: the state its state_dict() returned takes {size / 2**20:.0f} MiB in a "
                             f"checkpoint, more than the {MAX_CALLBACK_STATE // 2**20} MiB a callback may keep there "
                             f"(the checkpoint is written after every epoch). Keep less state, or write it to a file "
                             f"of its own. This is a fault in that callback; report it to its authors.")


def save(run_dir: pathlib.Path, parts: Parts, saved_state: dict[str, Any], world_size: int,
         writer: Any = None) -> None:
    """Write checkpoint.pt and metrics.jsonl for ``saved_state`` (:func:`global_state`), by ``writer`` if given."""
    save_checkpoint(run_dir, parts, saved_state, world_size, writer)
    folder.write_metrics(run_dir, saved_state["history"], writer)


def save_checkpoint(run_dir: pathlib.Path, parts: Parts, saved_state: dict[str, Any], world_size: int,
                    writer: Any = None) -> None:
    """Write checkpoint.pt alone (:func:`save` writes metrics.jsonl after it), through ``writer`` when given."""
    scheduler = scheduler_of(parts.updater)
    save_torch(run_dir / folder.CHECKPOINT, {
        "format": FORMAT,
        "model": parts.model.state_dict(),
        "updater": parts.updater.state_dict() if hasattr(parts.updater, "state_dict") else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "callbacks": callback_states(parts),
        "rng": rng_state(),
        "state": saved_state,
        "world_size": world_size,
    }, writer)


def load(run_dir: pathlib.Path) -> dict | None:
    """The run's checkpoint, checked to be one; None when it never wrote one (nothing was trained)."""
    path = run_dir / folder.CHECKPOINT
    new_run = f"start a new run with `{folder.new_run_command(run_dir)}`"
    if not os.path.lexists(path):
        if done := len(folder.read_metrics(run_dir)):
            raise CheckpointError(f"{path} is missing, but {folder.METRICS} records {done} finished epoch(s): the "
                                  f"checkpoint was deleted or moved. Put it back to resume, or {new_run}.")
        return None
    checkpoint = load_torch(path, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not an fmclf checkpoint (format {found!r}, expected {FORMAT!r}). It was "
                              f"written by another program, or by an fmclf too different from this one.")
    if why := problem(checkpoint):
        raise CheckpointError(f"{path}: {why}. It is damaged or was edited: restore it from a backup, or {new_run}.")
    return checkpoint


def progress(checkpoint: dict[str, Any] | None) -> tuple[int, int]:
    """How far a loaded checkpoint has trained: ``(finished epochs, batches of the next)``; ``(0, 0)`` for none.
    (A checkpoint written at an epoch's end has no batch.)"""
    if checkpoint is None:
        return 0, 0
    return checkpoint["state"]["epoch"], checkpoint["state"].get("batch", 0)


def problem(checkpoint: dict[str, Any]) -> str | None:
    """What in a loaded checkpoint is not what fmclf writes (fields, types, ranges, the history), or None."""
    import torch

    short = folder.short

    def whole(value: Any, low: int = 0) -> bool:
        return is_whole(value) and value >= low

    def finite(value: Any) -> bool:  # 0 or more, not inf or nan
        return is_number(value) and 0 <= value < math.inf

    model = checkpoint.get("model")
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()):
        return f"its model is {short(type(model).__name__)}, not a state_dict (names to tensors)"
    if checkpoint.get("updater") is not None and not isinstance(checkpoint["updater"], dict):
        return f"its updater state is {short(checkpoint['updater'])}, not a state_dict or none"
    rng = checkpoint.get("rng")
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor) \
            or rng["torch"].dtype != torch.uint8 or rng["torch"].ndim != 1:
        return "its random number generators' state is missing or is not torch's"
    py = rng.get("python")
    if not (isinstance(py, (tuple, list)) and len(py) == 3 and isinstance(py[1], (tuple, list))
            and all(isinstance(x, int) for x in py[1])):
        return "its Python random number generator's state is missing or malformed"
    if not whole(checkpoint.get("world_size"), 1):
        return f"its world_size is {short(checkpoint.get('world_size'))}, not a number of processes (1 or more)"
    state = checkpoint.get("state")
    fields = {f.name for f in dataclasses.fields(TrainState)}
    if not isinstance(state, dict) or not {"epoch", "history"} <= set(state) <= fields:
        return f"its training state is {short(state)}, not one with {', '.join(sorted(fields))}"
    if state.get("schedule_epochs") is not None and not whole(state["schedule_epochs"], 1):
        return f"its state.schedule_epochs is {short(state['schedule_epochs'])}, not a number of epochs"
    for key in ("epoch", "batch", "correct", "examples"):
        if key in state and not whole(state[key]):
            return f"its state.{key} is {short(state[key])}, not a whole number of 0 or more"
    for key, what in (("seconds", "a time in seconds"), ("loss_sum", "a finite sum of losses"),
                      ("lr", "a learning rate")):
        if key in state and not finite(state[key]) and not (key == "lr" and state[key] is None):  # lr None: none set
            return f"its state.{key} is {short(state[key])}, not {what}"
    if state.get("correct", 0) > state.get("examples", 0):
        return f"its state has {state['correct']} correct of {state.get('examples', 0)} examples"
    if why := folder.check_rows(state["history"]):
        return f"its history: {why}"
    if len(state["history"]) != state["epoch"]:
        return f"its state says {state['epoch']} epoch(s) are done, but its history holds {len(state['history'])}"
    return None


def restore(parts: Parts, checkpoint: dict, run_dir: pathlib.Path, comm: Any) -> TrainState:
    """Put the model, the updater, its scheduler, the callbacks and the RNGs back as the checkpoint has them."""
    try:
        parts.model.load_state_dict(checkpoint["model"])
        if checkpoint.get("updater") is not None and hasattr(parts.updater, "load_state_dict"):
            parts.updater.load_state_dict(checkpoint["updater"])
        scheduler = scheduler_of(parts.updater)
        if checkpoint.get("scheduler") is not None and scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        restore_callbacks(parts, checkpoint.get("callbacks") or {})
        state = TrainState(**checkpoint["state"])
        if not comm.is_root:  # rank 0 carries the partial sums (global_state), the others start from zero
            state.loss_sum, state.correct, state.examples = 0.0, 0, 0
        if state.lr is not None and not hasattr(parts.updater, "state_dict"):  # else its state_dict holds the rate
            change_lr(parts.updater, "set", state.lr)
        set_rng_state(checkpoint["rng"])
        if state.batch >= (batches := len(parts.dataset.train)):
            raise ValueError(f"it says {state.batch} batches of epoch {state.epoch + 1} are done, but an epoch "
                             f"has {batches}")
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise comm.alike(CheckpointError(f"{run_dir / folder.CHECKPOINT} does not fit this run's components "
                                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). It comes from "
                                         f"another run, or the plugins changed since it was written "
                                         f"({run_dir / folder.CONFIG} lists the versions that wrote it). Start a new "
                                         f"run, or reinstall those versions.")) from None
    return state


def restore_callbacks(parts: Parts, states: dict[str, Any]) -> None:
    """Give each callback its saved state (a callback new to the run starts afresh)."""
    for record, callback in parts.callbacks:
        state = states.get(BY_NAME["callback"].target(record.name))
        if state is None or not callable(getattr(callback, "load_state_dict", None)):
            continue
        try:
            callback.load_state_dict(state)
        except BaseException as exc:
            if not component_fault(exc):
                raise
            raise ComponentError(f"{record.describe()} raised {type(exc).__name__} in load_state_dict() while the "
                                 f"run resumed: {exc}. Its saved state does not fit this version of it; report this "
                                 f"to its authors, or start a new run.") from exc


def finished(run_dir: pathlib.Path) -> bool:
    """Whether model.pt (a state_dict) and summary.json (an object) read back; --resume rewrites a damaged one."""
    import torch

    summary = folder.read_object(run_dir / folder.SUMMARY)
    try:
        weights = load_torch(run_dir / folder.WEIGHTS, "final weights")
    except CheckpointError:
        return False
    return isinstance(summary, dict) and isinstance(weights, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items())


def save_weights(run_dir: pathlib.Path, model: Any) -> None:
    """Write the final weights, model.pt (a state_dict)."""
    save_torch(run_dir / folder.WEIGHTS, model.state_dict())


def final_weights(run_dir: pathlib.Path) -> tuple[dict[str, Any], pathlib.Path]:
    """model.pt, or the last checkpoint's model when the run has not finished; and which file it was."""
    path = run_dir / folder.WEIGHTS
    if os.path.lexists(path):  # a link is there to be refused, not passed over
        return load_torch(path, "final weights"), path
    if os.path.lexists(run_dir / folder.CHECKPOINT) and (checkpoint := load(run_dir)) is not None:
        return checkpoint["model"], run_dir / folder.CHECKPOINT  # load checked that it is a state_dict
    raise CheckpointError(f"{run_dir} holds no weights ({folder.WEIGHTS} is written when a run finishes, "
                          f"{folder.CHECKPOINT} after its first epoch). Train it first, or continue it with "
                          f"`{processes.resume_command(run_dir)}`.")


def named_weights(run_dir: pathlib.Path, name: str) -> tuple[dict[str, Any], pathlib.Path]:
    """The weights ``--weights NAME`` asks for: ``final`` (:func:`final_weights`), or RUN_DIR/NAME.pt that a
    callback kept (``best``: the best epoch's)."""
    if name == "final":
        return final_weights(run_dir)
    if not name or any(ch in name for ch in "/\\") or name.startswith("."):
        raise CheckpointError(f"--weights {name!r}: give final, or the name of a .pt file in the run folder "
                              f"(best for best.pt), without a path.")
    path = run_dir / f"{name.removesuffix('.pt')}.pt"
    if not os.path.lexists(path):
        kept = sorted(p.stem for p in run_dir.glob("*.pt") if p.name not in (folder.CHECKPOINT, folder.WEIGHTS))
        raise CheckpointError(f"{run_dir} holds no {path.name}: it is written by a callback that keeps weights, and "
                              f"this run had none that wrote it. Weights in this folder: "
                              f"{', '.join(['final', *kept])}.")
    weights = load_torch(path, f"weights ({path.name})")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path} holds {type(weights).__name__}, not a model's state_dict.")
    return weights, path
