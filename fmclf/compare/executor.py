"""Where a comparison's runs execute.

A job is a :class:`Call` of the Python API (start a run from its settings
file, resume a run folder, train a batched group) that writes its own run
folder: everything an executor needs to know is in :class:`Job`, and
everything the comparison needs back is the exit code (the rest is on disk).
So an executor is small: :class:`Executor` is the whole interface.
:class:`InProcessExecutor` makes each call in this process, one after the
other (``--jobs 1``: no interpreter and torch start-up per run);
:class:`LocalExecutor` runs up to ``workers`` jobs side by side, each in a
process of its own started with the call's ``fmclf`` arguments
(:attr:`Call.args`).

Another executor (a Ray or Dask cluster, a SLURM array) implements the same
``run`` method: start each job's command where the comparison folder is
reachable (a shared file system), report each exit code through ``done``,
and on a stop request pass SIGINT or SIGTERM on to the running jobs, which
then checkpoint and exit 130.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from .. import atomic
from ..errors import FmclfError, Interrupted, UsageError, said, stopped, to_stderr
from ..run import folder
from ..signals import say
from ..wording import COMMAND_LINE, flag, speaking


@dataclass(frozen=True)
class Call:
    """What a job does, in the terms of the Python API (:func:`run_job` makes it): a new run from the
    settings file ``settings`` into ``out``; the run folder ``out`` resumed with ``overrides``; or the
    batched group ``group``. ``plugins`` are the ``-p`` specs its process loads."""

    out: pathlib.Path | None = None
    settings: pathlib.Path | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  #: ``(setting, value)`` of run.config.RESUMABLE: epochs, device ...
    group: pathlib.Path | None = None
    plugins: tuple[str, ...] = ()

    @property
    def plugin_flags(self) -> tuple[str, ...]:
        """``-p SPEC`` for each of :attr:`plugins`: the group-level flags of its ``fmclf`` command."""
        return tuple(a for spec in self.plugins for a in ("-p", spec))

    @property
    def args(self) -> tuple[str, ...]:
        """The same call as ``fmclf`` arguments, for a job that runs in a process of its own."""
        head = self.plugin_flags
        if self.group is not None:
            return (*head, "run-group", str(self.group))
        if self.settings is not None:
            return (*head, "run", "--config", str(self.settings), "--out", str(self.out))
        with speaking(COMMAND_LINE):  # a command line, whichever front end started the comparison
            tail = [part for key, value in self.overrides for part in flag(key, value).split(" ", 1)]
        return (*head, "run", "--resume", str(self.out), *tail)

    def to_json(self) -> str:
        """This call as one JSON text: what a worker process is given (``python -m fmclf.compare.worker``)."""
        return json.dumps({"out": self.out and str(self.out), "settings": self.settings and str(self.settings),
                           "overrides": [list(pair) for pair in self.overrides],
                           "group": self.group and str(self.group), "plugins": list(self.plugins)})

    @classmethod
    def from_json(cls, text: str) -> Call:
        """The call :meth:`to_json` wrote."""
        data = json.loads(text)
        path = {k: pathlib.Path(data[k]) if data[k] is not None else None for k in ("out", "settings", "group")}
        return cls(**path, overrides=tuple((k, v) for k, v in data["overrides"]), plugins=tuple(data["plugins"]))

    def worker(self) -> list[str]:
        """The command of a process that makes this call (its output is ``fmclf`` with :attr:`args`')."""
        return [sys.executable, "-m", "fmclf.compare.worker", self.to_json()]

    def continuing(self) -> Call:
        """This call, or, when it starts a new run whose folder an earlier attempt already began (a cluster
        ran the job again), the call that resumes that folder: its settings are in its config.toml."""
        if self.settings is None or self.out is None or not folder.is_run(self.out):
            return self
        return Call(out=self.out, plugins=self.plugins)


@dataclass(frozen=True)
class Job:
    """One run or group to execute: its name, what it does, and where its output goes."""

    name: str
    call: Call
    log: pathlib.Path

    @property
    def args(self) -> tuple[str, ...]:
        """The arguments after ``fmclf`` that do this job in a process of its own."""
        return self.call.args


def open_log(log: str | os.PathLike, args: Sequence[str], mode: str = "ab") -> IO:
    """A job's log, opened for appending (``mode``) as fmclf's own files are (:func:`fmclf.atomic.open_append`: no
    link), its first line the command the job runs: every executor starts a job's output so."""
    path = pathlib.Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = atomic.open_append(path, mode)
    line = f"$ fmclf {' '.join(args)}\n"
    out.write(line.encode() if "b" in mode else line)
    out.flush()
    return out


def note(log: str | os.PathLike, text: str) -> None:
    """Add a line of the comparison's own to a job's log: why its task ended without the run's exit code."""
    with atomic.open_append(log, "a") as out:
        out.write(f"fmclf compare: {text}\n")


#: A job's exit code when a signal stopped it and it kept its checkpoint: the command's own for a stop.
STOPPED = Interrupted.exit_code


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its exit code (negative: killed by that signal; :data:`STOPPED`: stopped with its
    checkpoint) and how long it took."""

    job: Job
    returncode: int
    seconds: float


class Executor(Protocol):
    """Runs jobs; the comparison decides which and reads their results from disk."""

    #: how many jobs run at once (the comparison divides the CPU threads by it)
    workers: int

    def run(self, jobs: Sequence[Job], done: Callable[[Outcome], None]) -> None:
        """Run every job, calling ``done`` as each one ends. On SIGINT or SIGTERM:
        start no more, pass the signal on to the running jobs, wait for them
        (each writes a checkpoint and exits 130), then raise
        :class:`fmclf.errors.Interrupted`."""


@dataclass
class _Running:
    job: Job
    process: subprocess.Popen
    started: float
    log: object
    sent: int = 0  #: how many of the stop requests it has been sent


@dataclass
class LocalExecutor:
    """Up to ``workers`` jobs at a time, each in a subprocess: a worker that makes the job's call
    (:meth:`Call.worker`), or, given a ``command``, ``command + job.args``.

    Each job runs in its own process group, so a Ctrl-C at the terminal reaches
    only this process, which passes it on exactly once to each job (a second
    Ctrl-C is passed on again: the jobs then stop at once, keeping their last
    checkpoint). On Linux a job also gets SIGTERM if this process dies.
    """

    workers: int = 1
    command: Sequence[str] | None = None
    env: dict[str, str] | None = None
    poll_seconds: float = 0.05
    announce: Callable[[str], None] = say

    def run(self, jobs: Sequence[Job], done: Callable[[Outcome], None]) -> None:
        pending = collections.deque(jobs)
        running: list[_Running] = []
        requests: list[int] = []

        def handler(signum, frame):
            requests.append(signum)
            name = signal.Signals(signum).name
            if len(requests) == 1:
                self.announce(f"\n{name}: stopping the running jobs after their current batch; each writes a "
                              f"checkpoint (Ctrl-C again to stop them at once, keeping their last epoch's "
                              f"checkpoint)\n")
            else:
                self.announce(f"\n{name} again: stopping the running jobs at once\n")

        with _signals(handler):
            try:
                while pending or running:
                    while pending and len(running) < max(1, self.workers) and not requests:
                        running.append(self._start(pending.popleft()))
                    for r in running:
                        for signum in requests[r.sent:]:
                            with contextlib.suppress(ProcessLookupError):
                                r.process.send_signal(signum)
                        r.sent = len(requests)
                    for r in [r for r in running if r.process.poll() is not None]:
                        running.remove(r)
                        r.log.close()
                        done(Outcome(r.job, r.process.returncode, time.perf_counter() - r.started))
                    if running:
                        time.sleep(self.poll_seconds)
            finally:
                _stop(running)
        if requests:
            name = signal.Signals(requests[0]).name
            raise Interrupted(f"stopped by {name}; {len(pending)} job(s) were not started")

    def _start(self, job: Job) -> _Running:
        log = open_log(job.log, job.args)  # closed when the job ends
        argv = job.call.worker() if self.command is None else [*self.command, *job.args]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self.env, process_group=0, preexec_fn=_die_with_parent(),  # noqa: PLW1509 - started from one thread
        )
        return _Running(job, process, time.perf_counter(), log)


@contextlib.contextmanager
def _signals(handler):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # as atomic.signals_deferred does: a handler set outside Python (None) cannot be put back, so leave it
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not None}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stop(running: list[_Running]) -> None:
    """Leaving with jobs still running (an error in this process): ask them to stop, and wait."""
    for r in running:
        with contextlib.suppress(ProcessLookupError):
            r.process.send_signal(signal.SIGTERM)
    for r in running:
        try:
            r.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            r.process.kill()
            r.process.wait()
        r.log.close()


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux: a child gets SIGTERM (checkpoint, exit) when this process dies, instead of running on orphaned."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def run_job(call: Call) -> int:
    """Make ``call`` through the Python API in this process, printing what ``fmclf`` with its
    :attr:`~Call.args` prints; its exit code."""
    from .. import signals
    from ..train.blame import torch_failed

    try:
        return _job(call)
    except FmclfError as exc:
        signals.ending()  # a signal now must not cut the message short
        to_stderr(said(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a signal outside a run (a run's own stops say what they kept)
        signals.ending()
        to_stderr(stopped(exc))
        return STOPPED
    except (ImportError, OSError) as exc:
        text = torch_failed(exc)
        if text is None:
            raise
        to_stderr(f"Error: {text}")
        return 1


def _job(call: Call) -> int:
    from ..draw.report import RunReport, write_report
    from ..host.loading import load_plugins, set_host, split_specs
    from ..run.config import RunConfig, load_config, merge
    from ..run.runner import run_new, run_resume

    include, block = split_specs(call.plugins)
    host = load_plugins(include=include, block=block)
    set_host(host)
    for warning in host.warnings():
        to_stderr(f"Warning: {warning}")
    if call.group is not None:
        from ..run.group import run_group

        return run_group(call.group, host, echo=print, report=write_report)
    if call.out is None:
        raise UsageError("a comparison's job names the run folder it writes; this one names none.")
    if call.settings is None:
        result = run_resume(call.out, host, overrides=dict(call.overrides), echo=print, report=RunReport)
    else:
        config = merge(RunConfig(), set(), *load_config(call.settings))
        result = run_new(config, host, out=call.out, echo=print, report=RunReport)
    if result.trained_epochs:
        print(result.describe(), flush=True)
    return 0


@dataclass
class InProcessExecutor:
    """One job at a time, each call made in this process (:func:`run_job`: the Python API, not the
    command line) with its output sent to the job's log. Ctrl-C reaches the run in flight, which checkpoints and
    exits 130; then no further job starts. A signal the run absorbed (one that came
    after its last batch) stops the comparison too. torch's global state (default
    dtype, grad mode, deterministic flags, threads, RNG) is put back after each job,
    so no run changes what the next one sees; ``note`` says which run changed it."""

    main: Callable[[Call], int] = run_job
    workers: int = 1
    note: Callable[[str], None] = say

    def run(self, jobs: Sequence[Job], done: Callable[[Outcome], None]) -> None:
        from .. import signals

        for i, job in enumerate(jobs):
            started = time.perf_counter()
            before = signals.received()
            try:
                with (open_log(job.log, job.args, "a") as log, contextlib.redirect_stdout(log),
                      contextlib.redirect_stderr(log)):
                    with torch_state_kept() as changed:
                        try:
                            code = self.main(job.call)
                        except KeyboardInterrupt:
                            code = STOPPED
                        except Exception as exc:  # a crash in one run is that run's failure, not the comparison's
                            print(f"Error: {type(exc).__name__}: {exc}", flush=True)
                            code = 1
                if changed:
                    self.note(f"note: {job.name} changed torch's global state ({'; '.join(changed)}); one of its "
                              f"components does that. Put back before the next run.\n")
                done(Outcome(job, code, time.perf_counter() - started))
            except KeyboardInterrupt:  # a signal between two runs
                code = STOPPED
            if code == STOPPED or signals.received() > before:
                raise Interrupted(f"stopped by a signal while {job.name} trained; {len(jobs) - i - 1} job(s) were not "
                                  f"started")


#: torch's process-wide settings a run may change, each ``(name, read, write)``.
def _torch_settings() -> list[tuple[str, Callable[[], object], Callable[[object], None]]]:
    import torch

    def deterministic() -> object:
        return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())

    return [
        ("default dtype", torch.get_default_dtype, torch.set_default_dtype),
        ("grad mode", torch.is_grad_enabled, torch.set_grad_enabled),
        ("deterministic algorithms", deterministic,
         lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),  # type: ignore[index]
        ("cudnn.deterministic", lambda: torch.backends.cudnn.deterministic,
         lambda v: setattr(torch.backends.cudnn, "deterministic", v)),
        ("cudnn.benchmark", lambda: torch.backends.cudnn.benchmark,
         lambda v: setattr(torch.backends.cudnn, "benchmark", v)),
        ("float32 matmul precision", torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
        ("anomaly detection", torch.is_anomaly_enabled, torch.set_anomaly_enabled),
        ("threads", torch.get_num_threads, torch.set_num_threads),
    ]


@contextlib.contextmanager
def torch_state_kept():
    """Put torch's global state (the settings above and the random generators a checkpoint keeps) back as it
    was when the block ends; yields the list the names of the settings the block changed are added to
    (the threads and generators, which every run sets, are restored without a note)."""
    from ..run.checkpoint import rng_state, set_rng_state

    settings = _torch_settings()
    saved = [read() for _, read, _ in settings]
    rng = rng_state()
    changed: list[str] = []
    try:
        yield changed
    finally:
        for (name, read, write), value in zip(settings, saved):
            now = read()
            if now != value:
                if name != "threads":
                    changed.append(f"{name} {value} -> {now}")
                write(value)
        set_rng_state(rng)
