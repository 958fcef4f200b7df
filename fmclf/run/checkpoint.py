"""Checkpoints and final weights: the schema, writing, reading, checking, restoring.

A checkpoint is one ``torch.save``d dict, written atomically after every
epoch (and when a run is stopped mid-epoch)::

    format      "fmclf-checkpoint/1"
    model       the model's state_dict
    updater     the updater's state_dict, or None when it has none
    rng         the torch (CPU, and CUDA when used) and Python RNG states
    state       the TrainState: epochs done, batches into the next, partial sums, history
    world_size  how many processes trained it (a run resumes with as many)

Everything is read back with ``weights_only=True``: tensors and plain data,
never code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib
import pickle
import random
import shlex
import warnings
import zipfile
from typing import Any

from .. import atomic
from ..errors import CheckpointError, DivergenceError
from ..train.engine import Parts, TrainState
from . import folder

FORMAT = "fmclf-checkpoint/1"

_DAMAGED = "It is damaged or truncated, or was not written by fmclf. Start a new run, or restore the file from a backup."


def save_torch(path: pathlib.Path, obj: Any, writer: Any = None) -> None:
    """``torch.save`` through a temporary file, fsync and rename; by ``writer``
    (a :class:`~fmclf.run.writer.BackgroundWriter`) when given, serialised now."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    (writer or atomic).write_bytes(path, buf.getvalue())


def load_torch(path: pathlib.Path, what: str) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never code."""
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
        raise DivergenceError(
            f"training diverged: the model's weights became inf or nan in epoch {epoch} although every batch "
            f"loss was finite (an update overflowed). Try a smaller --lr.",
            epoch=epoch, batch=state.batch or None,
        )


def global_state(state: TrainState, comm: Any) -> dict[str, Any]:
    """``state`` as a checkpoint keeps it: the partial sums of an unfinished epoch added up
    over the processes (``comm.sum``; the identity in one process)."""
    import torch

    saved = dataclasses.asdict(state)
    if state.batch and comm.world_size > 1:
        sums = comm.sum(torch.tensor([state.loss_sum, state.correct, state.examples], dtype=torch.float64))
        saved.update(loss_sum=float(sums[0]), correct=int(sums[1]), examples=int(sums[2]))
    return saved


def local_state(saved: dict[str, Any], comm: Any) -> TrainState:
    """A checkpoint's state for this process: rank 0 carries the partial sums so far,
    the others start from zero, and the epoch's end adds them up once."""
    state = TrainState(**saved)
    if not comm.is_root:
        state.loss_sum, state.correct, state.examples = 0.0, 0, 0
    return state


def save(run_dir: pathlib.Path, parts: Parts, saved_state: dict[str, Any], world_size: int,
         writer: Any = None) -> None:
    """Write checkpoint.pt and metrics.jsonl for ``saved_state`` (see :func:`global_state`); through
    ``writer`` (:class:`~fmclf.run.writer.BackgroundWriter`) when given, as they are now."""
    save_torch(run_dir / folder.CHECKPOINT, {
        "format": FORMAT,
        "model": parts.model.state_dict(),
        "updater": parts.updater.state_dict() if hasattr(parts.updater, "state_dict") else None,
        "rng": rng_state(),
        "state": saved_state,
        "world_size": world_size,
    }, writer)
    folder.write_metrics(run_dir, saved_state["history"], writer)


def load(run_dir: pathlib.Path) -> dict | None:
    """The run's checkpoint, checked to be one; None when it never wrote one (nothing was trained)."""
    path = run_dir / folder.CHECKPOINT
    if not path.exists():
        done = len(folder.read_metrics(run_dir))
        if done:
            raise CheckpointError(
                f"{path} is missing, but {folder.METRICS} records {done} finished epoch(s): the checkpoint was "
                f"deleted or moved. Put it back to resume, or start a new run with "
                f"`fmclf run --config {shlex.quote(str(run_dir / folder.CONFIG))}`."
            )
        return None
    checkpoint = load_torch(path, "checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path}: not an fmclf checkpoint (format {found!r}, expected {FORMAT!r}). "
            f"It was written by another program, or by an fmclf too different from this one."
        )
    return checkpoint


def restore(parts: Parts, checkpoint: dict, run_dir: pathlib.Path, comm: Any) -> TrainState:
    """Put the model, the updater and the RNGs back as the checkpoint has them."""
    try:
        parts.model.load_state_dict(checkpoint["model"])
        if checkpoint.get("updater") is not None and hasattr(parts.updater, "load_state_dict"):
            parts.updater.load_state_dict(checkpoint["updater"])
        state = local_state(checkpoint["state"], comm)
        set_rng_state(checkpoint["rng"])
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise comm.alike(CheckpointError(
            f"{run_dir / folder.CHECKPOINT} does not fit this run's components ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}). It comes from another run, or the plugins changed since it was "
            f"written ({run_dir / folder.CONFIG} lists the versions that wrote it). Start a new run, or reinstall those versions."
        )) from None
    return state


def save_weights(run_dir: pathlib.Path, model: Any) -> None:
    """Write the final weights, model.pt (a state_dict)."""
    save_torch(run_dir / folder.WEIGHTS, model.state_dict())


def final_weights(run_dir: pathlib.Path) -> tuple[dict[str, Any], pathlib.Path]:
    """model.pt, or the last checkpoint's model when the run has not finished; and which file it was."""
    path = run_dir / folder.WEIGHTS
    if path.exists():
        return load_torch(path, "final weights"), path
    if (run_dir / folder.CHECKPOINT).exists():
        checkpoint = load(run_dir)
        if checkpoint is not None and isinstance(checkpoint.get("model"), dict):
            return checkpoint["model"], run_dir / folder.CHECKPOINT
    raise CheckpointError(
        f"{run_dir} holds no weights ({folder.WEIGHTS} is written when a run finishes, {folder.CHECKPOINT} "
        f"after its first epoch). Train it first, or continue it with `fmclf run --resume {run_dir}`."
    )
