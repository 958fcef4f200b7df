"""``--executor local``: this machine (the default)."""

from __future__ import annotations

from ...errors import UsageError
from ..executor import Executor, InProcessExecutor, LocalExecutor
from ..grid import check_jobs
from . import ExecutorSettings


def make(settings: ExecutorSettings) -> Executor:
    """``--jobs 1`` (the default): one job at a time in this process; more: a pool of subprocesses."""
    jobs = 1 if settings.jobs is None else settings.jobs
    check_jobs(jobs, most=None)
    if settings.detach:
        raise UsageError("--detach needs an executor that keeps running without this process (--executor slurm); "
                         "the local executor's jobs end with it. Leave out --detach, or choose --executor slurm.")
    return InProcessExecutor() if jobs == 1 else LocalExecutor(workers=jobs)
