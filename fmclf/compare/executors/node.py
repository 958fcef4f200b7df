"""One job on a cluster's node: what a Ray task or a SLURM array task runs.

The job's command runs as a child process in its own process group, its
output appended to the job's log, and dies with the task (SIGTERM: it
checkpoints). A stop request reaches it as a signal, so it checkpoints and
exits 130. A task the cluster runs a second time (its node died, SLURM
requeued it) finds the run folder its first attempt began and resumes it
instead of starting it anew. Imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from ...run.lock import NAME as LOCK_NAME
from ...signals import SIGNALS
from ..executor import Call, _die_with_parent, open_log

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock: runs are not locked there either
    fcntl = None  # type: ignore[assignment]

#: The file in a comparison's jobs folder whose appearance stops every job of it (see :func:`run_job`).
STOP_FILE = "stop-requested"

#: Environment variables a job takes from the comparison's process: its plugins' import path and fmclf's settings.
FORWARDED_ENV = ("PYTHONPATH", "FMCLF_")


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (this process's) that a job on another node needs too."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k == "PYTHONPATH" or k.startswith(FORWARDED_ENV[1])}


def wait_until_free(run_dir: pathlib.Path | None, seconds: float = 300.0) -> None:
    """Wait while a process still holds the run folder's lock: the earlier attempt of this job,
    writing its checkpoint after its task died, must finish before this one resumes it."""
    path = run_dir / LOCK_NAME if run_dir is not None else None
    if fcntl is None or path is None or not path.is_file():
        return
    deadline = time.monotonic() + seconds
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                return  # the run says who holds it, and fails: better than waiting forever
        finally:
            os.close(fd)
        time.sleep(0.5)


def run_job(job: Call | Sequence[str], log: str | os.PathLike, *, env: Mapping[str, str] | None = None,
            command: Sequence[str] | None = None, stop: int = signal.SIGINT, ignore: Sequence[int] = (),
            started: Callable[[subprocess.Popen], None] | None = None,
            stop_file: str | os.PathLike | None = None) -> int:
    """Make the call ``job`` (resumed if an earlier attempt began it), or run the command ``job``, in a
    process of its own with its output appended to ``log``; its exit code. A stop request is passed on to
    the job's process group as ``stop``, and the job is waited for: it checkpoints and exits 130. A request
    is a KeyboardInterrupt in this process (Ray's cancel, a SIGINT) or ``stop_file`` appearing, which the
    comparison writes so that a stop does not rest on the interrupt reaching the task; the two are one
    request, and only a second KeyboardInterrupt is passed on again (it stops the job at once). The job
    ignores the signals ``ignore`` (those meant for this process); ``started`` is told the job's process."""
    if isinstance(job, Call):
        job = job.continuing()
        wait_until_free(job.out)
        args, argv = job.args, job.worker() if command is None else [*command, *job.args]
    else:
        args = tuple(job)
        argv = [*(command or (sys.executable, "-m", "fmclf")), *args]
    with open_log(log, args) as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            process_group=0, preexec_fn=_child_setup(ignore),  # noqa: PLW1509 - the task starts one child, one thread
        )
        if started is not None:
            started(process)

        def send() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, stop)

        sent = interrupted = False
        while True:
            try:  # polled, not waited for: a signal handler of this process may wait for the job too
                while process.poll() is None:
                    if not sent and stop_file is not None and os.path.lexists(stop_file):
                        send()
                        sent = True
                    time.sleep(0.2)
                return process.returncode
            except KeyboardInterrupt:  # the stop file's request and Ray's cancel are one request
                if interrupted or not sent:
                    send()
                sent = interrupted = True


def _child_setup(ignore: Sequence[int]) -> Callable[[], None]:
    """The job's set-up between fork and exec: the stop signals reach it (a Ray worker blocks them in
    its threads, and a blocked mask is inherited), it ignores ``ignore``, and it dies with this
    process (SIGTERM: it checkpoints)."""
    die = _die_with_parent()

    def setup() -> None:
        for signum in SIGNALS:  # those fmclf stops on, with its checkpoint
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for signum in ignore:
            signal.signal(signum, signal.SIG_IGN)
        if die is not None:
            die()

    return setup


def wait_for_exit(pid: int, seconds: float) -> None:
    """Wait until process ``pid`` (a child of this one) has ended, without reaping it: safe inside
    a signal handler that interrupted a ``poll`` of the same process. Linux reads /proc."""
    deadline = time.monotonic() + seconds
    stat = pathlib.Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:
            state = stat.read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.2)
