"""Which executor runs a comparison's jobs: a table of names, open to other packages.

``fmclf compare --executor NAME`` picks one. The built-in ones are ``local``
(this machine: a pool of subprocesses, or this process for ``--jobs 1``),
``ray`` (a Ray cluster) and ``slurm`` (a SLURM job array through submitit).
A third party adds another (Dask, Kubernetes ...) without touching fmclf: an
entry point in the group ``fmclf.executors`` whose name is the executor's and
whose object is a factory ``(ExecutorSettings) -> Executor``, e.g. in its
``pyproject.toml``::

    [project.entry-points."fmclf.executors"]
    dask = "fmclf_dask:make_executor"

Every executor implements :class:`fmclf.compare.executor.Executor`. Importing
this module imports neither torch nor any cluster's client library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from ...errors import UsageError
from ..executor import Executor

#: The entry-point group a package registers its executors under.
ENTRY_POINT_GROUP = "fmclf.executors"

#: The built-in executors: name -> "module:factory" (imported only when chosen).
BUILT_IN = {
    "local": "fmclf.compare.executors.local:make",
    "ray": "fmclf.compare.executors.ray_cluster:make",
    "slurm": "fmclf.compare.executors.slurm_array:make",
}
DEFAULT = "local"


@dataclass(frozen=True)
class SlurmSettings:
    """What ``--slurm-*`` asks of each task of the array (None: the cluster's default)."""

    partition: str | None = None
    time: str | None = None  #: the time limit, as sbatch's --time takes it ("90", "1:30:00", "2-00:00:00")
    cpus: int | None = None  #: CPUs per task (default: --threads)
    gpus: int | None = None  #: GPUs per task
    array_parallelism: int | None = None  #: how many tasks of the array run at once
    options: dict[str, str] = field(default_factory=dict)  #: any other sbatch option, KEY=VALUE


@dataclass(frozen=True)
class ExecutorSettings:
    """What the command line says about where jobs run; each executor takes what it needs."""

    jobs: int | None = None  #: --jobs: how many jobs at once (None: not given, the executor's default)
    threads: int | None = None  #: --threads of every job (None: not given)
    device: str = "auto"  #: --device of every job
    detach: bool = False  #: submit and return; a later invocation with the same arguments collects
    ray_address: str | None = None
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


Factory = Callable[[ExecutorSettings], Executor]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Every executor name: the built-in ones first, then those other packages register."""
    return [*BUILT_IN, *sorted(n for n in _entry_points() if n not in BUILT_IN)]


def factory(name: str) -> Factory:
    """The factory registered under ``name`` (a built-in name cannot be taken over)."""
    if name in BUILT_IN:
        module, _, attr = BUILT_IN[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    found = _entry_points().get(name)
    if found is None:
        raise UsageError(f"--executor {name!r} is not an executor fmclf knows. Choose one of: {', '.join(names())} "
                         f"(a package adds one through the entry-point group {ENTRY_POINT_GROUP!r}).")
    try:
        return found.load()
    except Exception as exc:  # a broken third-party package: say which, not a traceback
        raise UsageError(f"--executor {name!r}: its package's entry point {found.value!r} failed to load "
                         f"({type(exc).__name__}: {exc}). Reinstall or fix that package, or choose another executor."
                         ) from None


def make(name: str, settings: ExecutorSettings) -> Executor:
    """The executor ``name``, set up from ``settings``."""
    return factory(name)(settings)
