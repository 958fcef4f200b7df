"""Running a plan: device, run folder, components, training, checkpoints, signals. The CLI parses and prints; this
module does the work, so the same run can be started from Python (:func:`run_new`) or resumed (:func:`run_resume`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .. import signals
from ..dist.comm import Solo, connect
from ..errors import Interrupted, Stopped, UsageError
from ..host.loading import PluginHost
from ..host.registry import ComponentRecord
from ..numbers import is_whole
from ..signals import handled
from ..wording import Echo, flag
from . import folder, processes, provenance
from .checkpoint import progress
from .config import RunConfig
from .lock import RunLock
from .plan import Plan, prepare, python_only
from .session import ReportMaker, RunResult, Session, Start, read_run, run_summary

__all__ = ["RunResult", "run_new", "run_resume", "run_summary"]


def run_new(config: RunConfig, host: PluginHost, *, out: pathlib.Path | Literal[False] | None = None,
            echo: Echo = print, objects: Mapping[str, ComponentRecord] | None = None,
            checkpoints: bool = True, report: ReportMaker | None = None) -> RunResult:
    """Train a new run of ``config`` into ``out`` (default: a fresh ``runs/...`` folder; False: none at all).

    Everything that can be checked is checked before any work: the settings and options and the run folder (no torch
    yet), then the device. A run that fails before training leaves no folder behind. Under torchrun every process
    calls this; they train together (see :mod:`fmclf.dist.comm`). ``objects`` are the records of components given as
    Python objects (see :func:`fmclf.run.plan.resolve`); without ``checkpoints`` the folder gets the metrics, summary
    and report but no weights. ``report`` builds what is drawn once the run has finished (the front ends pass
    :class:`fmclf.draw.report.RunReport`).
    """
    with handled(), connect() as comm:
        echo = processes.root_only(comm, echo)
        out_dirs: list[pathlib.Path] = []

        def check_out(plan: Plan) -> None:
            out_dirs.append(pathlib.Path(out) if out is not None
                            else folder.default_run_dir(plan.config.model, plan.config.loss))
            if comm.is_root and out is not None:  # a default name that is taken gets a suffix instead
                folder.check_new(out_dirs[0])

        plan = _agreed(config, host, comm, check_out if out is not False else None, objects)
        prov = provenance.of_session(plan, host, comm, plan.device)
        if out is False:
            return Session(plan, Start(None, prov=prov, checkpoints=checkpoints), comm, echo, report).run()
        locks: list[tuple[RunLock, bool]] = []  # rank 0's: the lock, and whether this run made the folder

        def create() -> pathlib.Path:
            path, created = folder.create_new(out_dirs[0], unique=out is None)
            lock = RunLock(path)
            locks.append((lock, created))
            lock.claim("start a run in it", echo)
            return folder.check_new(path)  # again, now that it is ours: another run may have filled it meanwhile

        try:
            run_dir = comm.on_root("creating the run folder", create)
            return Session(plan, Start(run_dir, prov=prov, checkpoints=checkpoints), comm, echo, report).run()
        except BaseException as exc:
            if isinstance(exc, (Stopped, Interrupted)):
                signals.ending()  # the clean-up below runs to its end, whatever else arrives
            for lock, created in locks:
                if lock.held and created:  # only an empty folder goes: a run that never started
                    lock.release(remove=True)
                    with contextlib.suppress(OSError):
                        lock.run_dir.rmdir()
            if isinstance(exc, Stopped):
                where = locks[0][0].run_dir if locks else None
                raise comm.alike(Interrupted(_after_stop(exc.signal, where, comm))) from None
            raise
        finally:
            for lock, _ in locks:
                lock.release()


def run_resume(run_dir: pathlib.Path, host: PluginHost, *, overrides: dict[str, Any] | None = None, echo: Echo = print,
               objects: Mapping[str, ComponentRecord] | None = None,
               report: ReportMaker | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, holding its lock; ``overrides`` may set what
    :meth:`~fmclf.run.config.Settings.resumed_with` allows (``epochs`` to train further, ``device`` ...). A run some
    of whose components were Python objects resumes only given the same ``objects``; ``report`` as for
    :func:`run_new`. Under torchrun only rank 0 reads the run folder; it must be resumed by as many processes as
    trained it.
    """
    run_dir, overrides, objects = pathlib.Path(run_dir), overrides or {}, objects or {}
    with handled(), connect() as comm:
        echo = processes.root_only(comm, echo)
        lock = RunLock(run_dir)

        def read() -> tuple[dict[str, Any], dict[str, Any], dict | None]:
            if folder.is_run(run_dir):  # a folder that is no run gets no lock file
                lock.claim("resume it", echo)
            return _read_run(run_dir, comm)

        try:
            settings, options, checkpoint = comm.on_root("reading the run folder", read)
            # load_config refused unknown settings
            config = RunConfig(**settings, options=options).resumed_with(overrides)
            _check_epochs(run_dir, checkpoint, config.epochs)
            missing = [t for t in config.from_python if t not in objects]
            if missing:
                raise UsageError(python_only(config, missing, (
                    f"resume it from Python instead, with the call that started it plus "
                    f"resume={str(run_dir)!r}: fmclf.fit(..., resume={str(run_dir)!r})")))
            plan = _agreed(config, host, comm, objects=objects)
            prov = provenance.of_session(plan, host, comm, plan.device, run_dir) if comm.is_root else {}
            if checkpoint is None:
                echo(f"{run_dir} has no checkpoint (the run stopped before its first one), so training starts at "
                     f"epoch 1.")
            start = Start(run_dir, checkpoint, prov, extend="epochs" in overrides,
                          schedule_epochs=settings.get("epochs"))
            return Session(plan, start, comm, echo, report).run()
        except Stopped as exc:
            signals.ending()
            raise comm.alike(Interrupted(_after_stop(exc.signal, run_dir if lock.held else None, comm))) from None
        except Interrupted:
            signals.ending()
            raise
        finally:
            lock.release()


def _check_epochs(run_dir: pathlib.Path, checkpoint: dict | None, epochs: Any) -> None:
    """Refuse ``--epochs`` below what the checkpoint has trained: the run would end with the weights
    of a later point than the metrics it reports (half of epoch 2 under epoch 1's accuracy)."""
    if checkpoint is None or not is_whole(epochs):
        return
    done, batch = progress(checkpoint)
    reached = done + (1 if batch else 0)
    if epochs >= reached:
        return
    where = (f"has trained {done} epoch(s) and {batch} batch(es) of epoch {done + 1}" if batch else
             f"has trained {done} epoch(s)")
    raise UsageError(
        f"{flag('epochs', epochs)} is fewer than {run_dir} has reached: it {where}, and its weights are those of "
        f"that point, so it cannot end at epoch {epochs}. Pass {flag('epochs', reached)} or more (or leave "
        f"{flag('epochs')} out), or "
        f"start a new run with `{folder.new_run_command(run_dir, f' --epochs {epochs}')}`."
    )


def _agreed(config: RunConfig, host: PluginHost, comm: Solo, check: Callable[[Plan], None] | None = None,
            objects: Mapping[str, ComponentRecord] | None = None) -> Plan:
    """`prepare` in every process, which must run the same settings with the same plugins; rank 0's drawn seed is
    everyone's."""
    plan, device = comm.agree("checking the settings", lambda: prepare(config, host, comm, check, objects))
    settings = {k: v for k, v in dataclasses.asdict(plan.config).items() if k != "seed"}
    comm.same_everywhere(
        "their settings", {**settings, "components": plan.components(), "device": getattr(device, "type", str(device))},
        "Start every process with the same command line, on machines with the same plugins installed.",
    )
    return plan.decided(seed=comm.broadcast(plan.config.seed))


def _read_run(run_dir: pathlib.Path, comm: Solo) -> tuple[dict[str, Any], dict[str, Any], dict | None]:
    """A run folder's settings and checkpoint (None: it never wrote one), checked to fit this many processes."""
    folder.check_resumable(run_dir)
    settings, options, checkpoint = read_run(run_dir)
    trained_by = checkpoint.get("world_size", 1) if checkpoint is not None else comm.world_size
    if trained_by != comm.world_size:
        how = ("one process (fmclf run ...)" if trained_by == 1
               else f"{trained_by} processes (torchrun, WORLD_SIZE={trained_by})")
        now = "one process" if comm.world_size == 1 else f"{comm.world_size} processes"
        raise UsageError(
            f"{flag('resume', run_dir, quoted=True)}: this run was trained by {how}, but {now} started to resume it. "
            f"Each process trains on its own shard of the data with its share of the batch, so a run resumes only "
            f"with the number of processes it started with; resume it with {how}, or start a new run with "
            f"--config {run_dir / folder.CONFIG}."
        )
    return settings, options, checkpoint


def _after_stop(signal_name: str, run_dir: pathlib.Path | None, comm: Solo) -> str:
    """What a stop outside training leaves, read from the run folder itself, and how to go on."""
    head = f"stopped by {signal_name}"
    if run_dir is None:
        return f"{head} before anything was written"
    if not run_dir.is_dir():
        return (f"{head} before training started; nothing was written to {run_dir} (the folder this run had made "
                f"is removed again, so the same command can use it)")
    resume = f"`{processes.resume_command(run_dir, comm.launch)}`"
    has = {name: (run_dir / name).exists() for name in (folder.CONFIG, folder.CHECKPOINT, folder.WEIGHTS,
                                                        folder.SUMMARY, folder.REPORT)}
    if not has[folder.CONFIG]:
        return f"{head} before training started; nothing was written to {run_dir}"
    if not has[folder.CHECKPOINT]:
        return (f"{head} before training started; the run folder {run_dir} holds its settings but no checkpoint, "
                f"and {resume} starts it from epoch 1")
    if not (has[folder.WEIGHTS] and has[folder.SUMMARY]):
        return (f"{head} outside training; the run folder {run_dir} keeps its last checkpoint and the metrics of "
                f"every epoch before it, and {resume} continues (or finishes) it")
    if not has[folder.REPORT]:
        return (f"{head} after training had finished: {run_dir} holds the trained weights ({folder.WEIGHTS}) and "
                f"{folder.SUMMARY}; {resume} draws the pictures and {folder.REPORT} the stop cut short")
    return f"{head} after the run had finished; {run_dir} holds the whole run"
