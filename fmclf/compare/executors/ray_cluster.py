"""``--executor ray``: each job a Ray task on a cluster (``pip install 'fmclf[ray]'``).

A task reserves ``--threads`` CPUs (and one GPU when the runs train on
``cuda``) and runs the job's command as a child process on its node
(:func:`fmclf.compare.executors.node.run_job`); the comparison's folder must
be on a file system every node shares. Ctrl-C writes the comparison's stop
file (``jobs/stop-requested``, which each task watches) and cancels the tasks,
which Ray turns into a KeyboardInterrupt inside each running task; either is
passed on to the job as SIGINT: it checkpoints and exits 130. The file is there
because the interrupt does not always reach a task. A task whose node dies is
run again on another node, and resumes from the run's last checkpoint.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ... import atomic
from ...errors import Interrupted, UsageError
from ...signals import say
from ..executor import STOPPED, Job, Outcome, _signals, note
from ..grid import check_jobs
from . import ExecutorSettings
from .node import STOP_FILE, forwarded_env, run_job

#: How often a task is run again after its node or worker died.
RETRIES = 3
#: --jobs not given: as many tasks at once as the cluster has room for (Ray queues the rest).
UNLIMITED = 1_000_000


def make(settings: ExecutorSettings) -> RayExecutor:
    """The Ray executor for ``--executor ray``; checks that Ray is installed and --threads given."""
    if settings.detach:
        raise UsageError("--detach works with --executor slurm only: Ray's tasks end with the process that started "
                         "them. Leave out --detach (the same command continues a stopped comparison).")
    if settings.threads is None:
        raise UsageError("--executor ray needs --threads N: each run reserves N CPUs of the cluster and trains with "
                         "N threads (this machine's cores say nothing about the nodes'). Give --threads 1, say.")
    if settings.jobs is not None:
        check_jobs(settings.jobs, most=None)
    try:
        import ray  # noqa: F401 - only whether it is there
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'fmclf[ray]' (on this machine and every node)."
                         ) from None
    return RayExecutor(address=settings.ray_address, threads=settings.threads,
                       gpus=1 if settings.device.startswith("cuda") else 0,
                       workers=settings.jobs if settings.jobs is not None else UNLIMITED)


@dataclass
class RayExecutor:
    """Jobs as Ray tasks; ``address`` None joins RAY_ADDRESS's cluster or starts one on this machine."""

    address: str | None = None
    threads: int = 1
    gpus: int = 0
    workers: int = UNLIMITED
    retries: int = RETRIES
    env: dict[str, str] = field(default_factory=forwarded_env)
    poll_seconds: float = 0.2
    announce: Callable[[str], None] = say

    def run(self, jobs: Sequence[Job], done: Callable[[Outcome], None]) -> None:
        """Run every job as a Ray task, calling ``done`` as each ends (see
        :class:`~fmclf.compare.executor.Executor`)."""
        import ray

        if not jobs:  # nothing to start a cluster connection for
            return
        ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False, configure_logging=False)
        task = ray.remote(run_job).options(num_cpus=self.threads, num_gpus=self.gpus, max_retries=self.retries,
                                           retry_exceptions=False)
        # Asked to stop, every task is told through this file too (read on a file system all nodes share).
        stop_file = pathlib.Path(jobs[0].log).parent / STOP_FILE
        stop_file.unlink(missing_ok=True)  # an earlier stop's: this invocation continues
        pending = collections.deque(jobs)
        running: dict[Any, tuple[Job, float]] = {}
        requests: list[int] = []
        sent = 0

        def handler(signum, frame):
            requests.append(signum)
            self.announce(f"\n{signal.Signals(signum).name}: stopping the running jobs on the cluster; each writes a "
                          f"checkpoint\n")

        with _signals(handler):
            try:
                while pending or running:
                    while pending and len(running) < max(1, self.workers) and not requests:
                        job = pending.popleft()
                        ref = task.remote(job.call, str(job.log), env=self.env,  # type: ignore[call-arg]
                                          stop_file=str(stop_file))
                        running[ref] = (job, time.perf_counter())
                    if len(requests) > sent:  # a stop: Ray raises KeyboardInterrupt in each task, run_job signals
                        if not sent:
                            with contextlib.suppress(OSError, atomic.RefusedFile):  # the cancel below still asks
                                os.close(atomic.open_owned(stop_file, os.O_WRONLY | os.O_CREAT))
                        for ref in running:
                            ray.cancel(ref, force=False)
                        sent = len(requests)
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_seconds)
                    for ref in ready:
                        job, started = running.pop(ref)
                        done(Outcome(job, _exit_code(ray, ref, job), time.perf_counter() - started))
            finally:
                for ref in running:  # leaving on an error of this process: stop the tasks it started
                    ray.cancel(ref, force=False)
        if requests:
            raise Interrupted(f"stopped by {signal.Signals(requests[0]).name}; {len(pending)} job(s) were not started")


def _exit_code(ray: Any, ref: Any, job: Job) -> int:
    """A task's exit code; a cancelled task stopped with its checkpoint (:data:`STOPPED`); one that Ray
    lost after its retries counts as killed (the next invocation resumes it), said in its log."""
    try:
        return int(ray.get(ref))
    except ray.exceptions.TaskCancelledError:
        return STOPPED
    except ray.exceptions.RayError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        note(job.log, f"the Ray task of this run was lost ({type(exc).__name__}: {first})")
        return -int(signal.SIGKILL)
