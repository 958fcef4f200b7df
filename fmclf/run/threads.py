"""CPU threads: how many torch's operations use when ``--threads`` is not given, and keeping idle ones
from spinning on cores that other work needs. Both made a default CPU run several times slower on a
shared machine:

- After each parallel region GNU OpenMP keeps its workers busy-waiting for the next one, and the loop
  starts one every few microseconds, so they never sleep: a spinning worker takes the core another
  thread needs. :func:`calm_openmp` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy,
  before torch is imported (the CLI calls it first thing).
- :func:`choose` picks the thread count from the problem and the machine; :class:`ContentionWatch` says
  once when an epoch runs much slower than the fastest so far (other work on the cores).

The count is recorded in config.toml: it can change a CPU run's last bits, so ``--resume`` repeats it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..wording import flag

WAIT_POLICY = "OMP_WAIT_POLICY"
#: Set by the user or by torchrun (1 per process): then torch's own count is the user's choice.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Multiply-adds per training batch (parameters x batch size) below which threads are not
#: worth their cost: each operation of such a step takes microseconds, about what waking
#: and joining a second thread does. The default softmax regression is 7850 x 256 = 2.0e6.
SMALL_BATCH_WORK = 8_000_000
#: An epoch this many times slower than the fastest so far is taken for other work on the cores.
SLOWDOWN = 1.5


def calm_openmp(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless a policy is set; True when it was set here.
    Only has an effect before torch (and its OpenMP) is loaded."""
    if WAIT_POLICY in environ or "torch" in sys.modules:
        return False
    environ[WAIT_POLICY] = "PASSIVE"
    return True


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def batch_work(model: Any, batch_size: int) -> int:
    """Multiply-adds of one training batch through a dense model (a lower bound for a convolutional one)."""
    try:
        params = sum(int(p.numel()) for p in model.parameters() if p.requires_grad)
    except (AttributeError, TypeError):
        return SMALL_BATCH_WORK  # not an nn.Module: no basis for a small-problem choice
    return params * max(int(batch_size), 1)


@dataclass(frozen=True)
class Choice:
    """The thread count a run uses and why, for the run's record and its start line."""

    threads: int
    why: str
    chosen: bool  #: False when the user set it (--threads, OMP_NUM_THREADS)


def choose(requested: int | None, work: int, *, cpus: int, processes_here: int = 1,
           environ: Mapping[str, str] = os.environ, current: int | None = None) -> Choice:
    """The thread count for a CPU run: ``requested`` (``--threads``) when given; torch's own (``current``) when
    OMP_NUM_THREADS or MKL_NUM_THREADS is set; else 1 for a small problem (``work``: :func:`batch_work`), and
    this process's share of the ``cpus`` for a larger one."""
    if requested is not None:
        return Choice(requested, flag("threads"), chosen=False)
    named = next((var for var in THREAD_VARS if environ.get(var)), None)
    if named is not None and current is not None:
        return Choice(current, f"${named}", chosen=False)
    share = max(cpus // max(processes_here, 1), 1)
    if share == 1:
        return Choice(1, "one CPU", chosen=True)
    if work < SMALL_BATCH_WORK:
        return Choice(1, "small model", chosen=True)
    return Choice(share, f"{share} CPUs" if processes_here == 1 else f"{cpus} CPUs / {processes_here} processes",
                  chosen=True)


def apply(choice: Choice) -> None:
    """Make torch use ``choice.threads`` intra-op threads."""
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)


class ContentionWatch:
    """An internal listener: says once when an epoch takes :data:`SLOWDOWN` times the fastest so far."""

    def __init__(self, threads: int, echo: Callable[[str], None], *, slowdown: float = SLOWDOWN,
                 min_seconds: float = 0.05) -> None:
        self.threads, self.echo, self.slowdown, self.min_seconds = threads, echo, slowdown, min_seconds
        self.fastest: float | None = None
        self.said = False

    def on_epoch_end(self, event: Any) -> None:
        seconds = float(event.metrics.get("seconds", 0.0))
        if self.fastest is None or seconds < self.fastest:
            self.fastest = seconds
            return
        if self.said or seconds < max(self.slowdown * self.fastest, self.min_seconds):
            return
        self.said = True
        if self.threads > 1:
            advice = (f"With several threads, each operation waits for the slowest of them; {flag('threads', 1)} is "
                      "often faster on a busy machine.")
        elif (cpus := usable_cpus()) > 1:  # on an overcommitted machine each thread gets its own share of the cores
            advice = (f"The run trains on one thread; where other processes hold every core, {flag('threads', cpus)} "
                      f"gets it a larger share of them.")
        else:
            advice = "The run trains on one thread already; it speeds up again when the other work ends."
        self.echo(f"Note: epoch {event.metrics.get('epoch', '?')} took {seconds:.2f} s, "
                  f"{seconds / max(self.fastest, 1e-9):.1f}x the fastest so far ({self.fastest:.2f} s): other "
                  f"work is sharing the CPU. {advice}")
