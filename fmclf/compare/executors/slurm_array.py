"""``--executor slurm``: the comparison's jobs as one SLURM job array, through submitit
(``pip install 'fmclf[slurm]'``).

Each task of the array runs one job's command on its node
(:func:`fmclf.compare.executors.node.run_job`); the comparison's folder must
be on a file system the nodes share. The array's job ids are kept in
``DIR/jobs/slurm.json``: with ``--detach`` the comparison returns once the
array is submitted, and a later ``fmclf compare`` with the same arguments
finds the tasks still queued or running and waits for them (or, detached
again, leaves them be) instead of submitting them twice.

``scancel`` (SIGTERM) or a preemption ends a task's run with its checkpoint
(exit 130) and the next invocation resumes it. Before its time limit, SLURM
signals the task (submitit asks for SIGUSR2, 90 s ahead): the run checkpoints
and the task is requeued, to continue from that checkpoint. Ctrl-C of a
waiting comparison stops the running tasks the same way and cancels the
pending ones. The state of a task is read from ``squeue`` and the task's
result file, so a cluster without accounting (no ``sacct``) works too.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ... import atomic
from ...errors import Interrupted, UsageError
from ...signals import say
from ..executor import Call, Job, Outcome, _signals, note
from ..grid import check_jobs
from . import ExecutorSettings, SlurmSettings
from .node import run_job, wait_for_exit

#: Where the array's job ids are kept, in DIR/jobs.
RECORD = "slurm.json"
#: submitit's folder for the array's scripts, pickles and logs, in DIR/jobs.
FOLDER = "slurm"
#: --slurm-time when not given.
DEFAULT_TIME = "24:00:00"
#: How long a stopped task may take to write its checkpoint before the comparison gives up waiting.
STOP_SECONDS = 300.0

_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def minutes(text: str) -> int:
    """sbatch's --time forms (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in whole minutes."""
    m = _TIME.match(text.strip())
    if m is None:
        raise UsageError(f"--slurm-time {text!r} is not a time sbatch takes. Give minutes (90), H:MM:SS (1:30:00) or "
                         f"D-HH:MM:SS (2-00:00:00).")
    a, b, c = int(m["a"]), int(m["b"] or 0), int(m["c"] or 0)
    if m["d"] is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(m["d"]) * 86400 + a * 3600 + b * 60 + c
    elif m["c"] is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    else:  # M, M:S
        seconds = a * 60 + b
    return max(1, -(-seconds // 60))


def make(settings: ExecutorSettings) -> SlurmExecutor:
    """The SLURM executor for ``--executor slurm``; checks that submitit is installed and --threads given."""
    if settings.threads is None:
        raise UsageError("--executor slurm needs --threads N: each task of the array gets N CPUs (or --slurm-cpus) "
                         "and its run trains with N threads. Give --threads 1, say.")
    if settings.jobs is not None:  # below, a 0 would read as "not given": no cap at all
        check_jobs(settings.jobs, most=None)
    for name, value in (("--slurm-cpus", settings.slurm.cpus), ("--slurm-gpus", settings.slurm.gpus),
                        ("--slurm-array-parallelism", settings.slurm.array_parallelism)):
        if value is not None and value < (0 if name == "--slurm-gpus" else 1):
            raise UsageError(f"{name} must be at least {0 if name == '--slurm-gpus' else 1}, got {value}.")
    minutes(settings.slurm.time or DEFAULT_TIME)  # its form, before anything is submitted
    try:
        import submitit  # noqa: F401 - only whether it is there
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install 'fmclf[slurm]'.") from None
    gpus = settings.slurm.gpus if settings.slurm.gpus is not None else int(settings.device.startswith("cuda"))
    return SlurmExecutor(slurm=settings.slurm, threads=settings.threads, gpus=gpus, detach=settings.detach,
                         workers=settings.jobs or settings.slurm.array_parallelism or 1_000_000)


class Task:
    """What a task of the array calls: one job, checkpointable (submitit requeues it on SIGUSR2)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None

    def __call__(self, call: Call, log: str) -> int:
        # Under SLURM every process of the task gets scancel's SIGTERM itself, so a stop reaching this
        # process is passed on as SIGTERM (a second one changes nothing); SIGUSR2 is submitit's, not the run's.
        return run_job(call, log, stop=signal.SIGTERM, ignore=(signal.SIGUSR2,), started=self._started)

    def _started(self, process: subprocess.Popen) -> None:
        self._process = process

    def checkpoint(self, call: Call, log: str) -> Any:
        """Before the time limit (or on preemption): the run writes its checkpoint and ends, and the
        task is requeued with the same job, which then resumes it."""
        import submitit

        if self._process is not None and self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            wait_for_exit(self._process.pid, 80)
        return submitit.helpers.DelayedSubmission(Task(), call, log)


@dataclass
class SlurmExecutor:
    """Jobs as the tasks of one SLURM array (``cluster``: submitit's "slurm", or "local"/"debug" to try it)."""

    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    threads: int = 1
    gpus: int = 0
    detach: bool = False
    workers: int = 1_000_000
    cluster: str = "slurm"
    poll_seconds: float = 2.0
    tell: Callable[[str], None] = functools.partial(print, flush=True)  #: what the array does
    announce: Callable[[str], None] = say  #: a stop request (from a signal handler)

    def run(self, jobs: Sequence[Job], done: Callable[[Outcome], None]) -> None:
        """Submit the jobs not already queued as one array, then wait for every task (or, with
        ``detach``, return); see :class:`~fmclf.compare.executor.Executor`."""
        if not jobs:
            return
        where = jobs[0].log.parent
        record = _read(where / RECORD)
        live = self._queued(list(record.values()))
        tasks: dict[str, Any] = {j.name: self._job(where, record[j.name]) for j in jobs if record.get(j.name) in live}
        fresh = [j for j in jobs if j.name not in tasks]
        if fresh:
            submitted = self._submit(where, fresh)
            tasks.update(submitted)
            record.update({name: task.job_id for name, task in submitted.items()})
            atomic.write_text(where / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")
        kept = len(tasks) - len(fresh)
        self.tell(f"SLURM: {len(fresh)} task(s) submitted" + (f", {kept} still queued from before" if kept else "")
                  + f"; their ids are in {where / RECORD}")
        if self.detach:
            self.tell("--detach: not waiting. Run the same command again to collect the results (it waits for the "
                      "tasks still queued or running, and submits only what is missing).")
            return
        self._wait(jobs, tasks, done)

    def _executor(self, where: pathlib.Path) -> Any:
        import submitit

        executor = submitit.AutoExecutor(folder=where / FOLDER / "%j", cluster=self.cluster)
        extra = {"time": self.slurm.time or DEFAULT_TIME, **self.slurm.options}
        executor.update_parameters(
            name="fmclf-compare", timeout_min=minutes(extra["time"]), cpus_per_task=self.slurm.cpus or self.threads,
            gpus_per_node=self.gpus or None, slurm_partition=self.slurm.partition,
            slurm_array_parallelism=self.slurm.array_parallelism or min(self.workers, 1_000_000),
            slurm_additional_parameters=extra,
        )
        return executor

    def _submit(self, where: pathlib.Path, jobs: Sequence[Job]) -> dict[str, Any]:
        executor = self._executor(where)
        for job in jobs:  # the header run_job writes follows this one
            job.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            submitted = executor.map_array(Task(), [j.call for j in jobs], [str(j.log) for j in jobs])
        except Exception as exc:  # sbatch refused (a partition, an option): say what it said
            said = str(exc).strip().splitlines()
            raise UsageError(f"SLURM refused the array: {said[-1] if said else type(exc).__name__}. Check the "
                             f"--slurm-* options.") from None
        return {j.name: t for j, t in zip(jobs, submitted, strict=True)}

    def _job(self, where: pathlib.Path, job_id: str) -> Any:
        import submitit

        return submitit.SlurmJob(folder=where / FOLDER / "%j", job_id=job_id)

    def _queued(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` (array tasks, ``123_4``) SLURM still has queued or running."""
        if self.cluster != "slurm" or not job_ids:
            return set()  # submitit's local tasks end with the process that started them
        mains = sorted({i.split("_")[0] for i in job_ids})
        try:
            listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(mains)], capture_output=True,
                                    text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return set()
        return {line.strip() for line in listed.stdout.splitlines()} & set(job_ids)

    def _ended(self, task: Any) -> bool:
        if self.cluster != "slurm":
            return task.done()
        return task.paths.result_pickle.exists() or task.job_id not in self._queued([task.job_id])

    def _wait(self, jobs: Sequence[Job], tasks: dict[str, Any], done: Callable[[Outcome], None]) -> None:
        waiting = {j.name: (j, tasks[j.name]) for j in jobs}
        started = time.perf_counter()
        requests: list[int] = []

        def handler(signum, frame):
            requests.append(signum)
            self.announce(f"\n{signal.Signals(signum).name}: stopping the array's tasks; each running run writes a "
                          f"checkpoint\n")

        sent = 0
        with _signals(handler):
            while waiting:
                if len(requests) > sent:
                    sent = len(requests)
                    self._cancel([t for _, t in waiting.values()])
                ended = [name for name, (_, t) in waiting.items() if self._ended(t)]
                for name in ended:
                    job, task = waiting.pop(name)
                    done(Outcome(job, _exit_code(task, job), time.perf_counter() - started))
                if waiting and not ended:
                    time.sleep(self.poll_seconds)
        if requests:
            raise Interrupted(f"stopped by {signal.Signals(requests[0]).name}")

    def _cancel(self, tasks: list[Any]) -> None:
        """Stop the running tasks as scancel does (SIGTERM: each run checkpoints) and cancel the pending ones."""
        if self.cluster == "slurm":
            ids = [t.job_id for t in tasks]
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
            return
        for task in tasks:  # submitit's local tasks: its cancel is a SIGINT, passed on to the run as SIGTERM
            task.cancel(check=False)


def _exit_code(task: Any, job: Job) -> int:
    """A task's exit code: what its run returned; a task that ended without one (cancelled while
    queued, killed, timed out) counts as stopped, and the next invocation resumes its run."""
    if task.paths.result_pickle.exists():
        try:
            return int(task.result())
        except Exception as exc:  # the task's own failure, as submitit reports it
            text = str(exc).strip().splitlines()
            said = text[-1] if text else type(exc).__name__
            note(job.log, f"the SLURM task {task.job_id} ended without its run's exit code ({said})")
            return -int(signal.SIGTERM)
    note(job.log, f"the SLURM task {task.job_id} ended without a result (cancelled or killed)")
    return -int(signal.SIGKILL)


def _read(path: pathlib.Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
