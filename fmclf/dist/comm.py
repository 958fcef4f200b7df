"""The collectives of data-parallel training across the processes torchrun starts.

:func:`connect` joins the processes of a launch (:mod:`.launch` reads who this one is) into one process group and
returns a :class:`Comm`; outside torchrun, or with one process, it returns :class:`Solo`, whose collectives are
no-ops, so neither the runner nor the engine asks which it has. What a run makes of them (the device of each process,
the checks of a plan, summary.json, the messages) is :mod:`fmclf.run`'s. How a distributed run works, and why its
all-reduce is explicit rather than ``DistributedDataParallel``, is told in docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import DistributedError, FmclfError, UsageError
from .launch import ALONE, TIMEOUT_ENV, Launch, launch_from_env, timeout_seconds

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
Flag = TypeVar("Flag")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _attempt(fn: Callable[[], T]) -> tuple[T | None, Exception | None, tuple[int, str] | None]:
    """``fn()``'s result, or the exception it raised and its (exit code, message) for the other processes."""
    try:
        return fn(), None, None
    except Exception as exc:  # every failure is shared, so that no process waits for this one
        text = str(exc) if isinstance(exc, FmclfError) else f"{type(exc).__name__}: {exc}"
        return None, exc, (getattr(exc, "exit_code", 1), text)


def _quiet(exc: FmclfError, exit_code: int | None = None) -> FmclfError:
    """Mark an error that rank 0 reports: this process exits with its code, silently."""
    exc.quiet = True  # type: ignore[attr-defined]
    if exit_code is not None:
        exc.exit_code = exit_code
    return exc


def _processes(ranks: list[int]) -> str:
    return f"process {ranks[0]}" if len(ranks) == 1 else "processes " + ", ".join(map(str, ranks))


def _difference(a: Any, b: Any, rank: int) -> str:
    """How process ``rank``'s ``b`` differs from process 0's ``a``, briefly."""
    def both(x: Any, y: Any) -> str:
        return f"{x!r} in process 0, {y!r} in process {rank}"

    if isinstance(a, dict) and isinstance(b, dict):
        text = "; ".join(f"{k}: {both(a.get(k), b.get(k))}" for k in {**a, **b} if a.get(k) != b.get(k))
    else:
        text = both(a, b)
    return text if len(text) <= 400 else text[:400] + "..."


def _unflatten(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy ``flat``'s consecutive pieces back into ``tensors`` (whatever their strides; what follows them in
    ``flat``, such as a stop request, is left out)."""
    sizes = [t.numel() for t in tensors]
    for t, piece in zip(tensors, flat[: sum(sizes)].split(sizes)):
        t.copy_(piece.view(t.shape))


def _groups(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (device, dtype): one flat buffer, one collective per group (almost always one)."""
    out: dict[tuple[str, Any], list] = {}
    for t in tensors:
        out.setdefault((str(t.device), t.dtype), []).append(t)
    return list(out.values())


class Solo:
    """A process on its own: the same methods as :class:`Comm`, every collective a no-op (nothing is sent
    anywhere and nothing waits), so that the engine and the runner always get a comm."""

    rank = 0
    world_size = 1
    is_root = True
    launch = ALONE
    backend = ""  #: no process group

    def agree(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in every process; if it fails in any, raise in all of them."""
        return fn()

    def on_root(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in rank 0 only and give every process its result (or its failure)."""
        return fn()

    def broadcast(self, value: T, what: str = "receiving rank 0's settings") -> T:
        """Rank 0's ``value``, in every process."""
        return value

    def gather(self, what: str, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, in every process."""
        return [value]

    def same_everywhere(self, what: str, value: Any, fix: str) -> None:
        """Refuse to go on unless ``value`` is equal in every process."""

    def alike(self, exc: FmclfError) -> FmclfError:
        """``exc``, raised alike in every process: reported by rank 0 only."""
        return exc

    def share_model(self, module: Any) -> None:
        """Make every process's weights rank 0's, and keep its floating-point buffers
        (batch-norm statistics) averaged over the processes after every step."""

    def watch(self, flag: Flag, device: Any = None) -> Flag:
        """Given the flag signals set in this process, the flag the training loop should
        obey: set in every process after the same batch (looked at every step on the
        CPU, every 32 on an accelerator, where reading it waits for the device)."""
        return flag

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the processes."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes."""
        return tensor


class Comm(Solo):
    """One process of a torchrun launch, joined to the others by ``torch.distributed``."""

    def __init__(self, launch: Launch, backend: str, timeout: float) -> None:
        self.launch = launch
        self.rank, self.world_size = launch.rank, launch.world_size
        self.is_root = self.rank == 0
        self.backend = backend  #: the process group's ("gloo", or "cpu:gloo,cuda:nccl")
        self.timeout = timeout
        self.stop: Any = None  #: the agreed stop flag (see :meth:`watch`)
        self._local: Any = None  #: the flag this process's signal handlers set
        self._steps = 0
        self._stop_every = 1
        self._buffers: list[Any] = []

    def _collective(self, what: str, op: str, *args: Any, **kwargs: Any) -> Any:
        """``torch.distributed.<op>(*args, **kwargs)``, returning the first argument, which every collective fills in
        place; a RuntimeError means contact was lost while ``what``."""
        import torch.distributed as dist

        try:
            getattr(dist, op)(*args, **kwargs)
            return args[0]
        except RuntimeError as exc:  # gloo, nccl and store errors are all RuntimeErrors
            raise DistributedError(
                f"process {self.rank} of {self.world_size} lost contact with the others while {what} "
                f"({_first_line(exc)}). Another process has probably failed or been stopped: look for its own message "
                f"(\"[rank N] Error: ...\"; torchrun's report names it). If one is only slow (a slow disk, a first "
                f"compilation), set {TIMEOUT_ENV} to more than {self.timeout:g} seconds.") from None

    def gather(self, what: str, value: Any) -> list[Any]:
        return self._collective(what, "all_gather_object", [None] * self.world_size, value)

    def broadcast(self, value: T, what: str = "receiving rank 0's settings") -> T:
        return self._collective(what, "broadcast_object_list", [value], src=0)[0]

    def agree(self, what: str, fn: Callable[[], T]) -> T:
        result, error, failure = _attempt(fn)
        failures = self.gather(what, failure)
        if not any(failures):
            return result
        if error is not None and not isinstance(error, FmclfError):
            raise error  # a bug: its traceback, where it happened
        code = next(f[0] for f in failures if f)
        if not self.is_root:
            raise _quiet(DistributedError(f"stopped: another process failed while {what}"), code)
        own = failures[0][1] if failures[0] else None
        others: dict[str, list[int]] = {}
        for r, f in enumerate(failures[1:], start=1):
            if f and f[1] != own:
                others.setdefault(f[1], []).append(r)
        if error is not None and not others:
            raise error
        lines = [own] if own else []
        lines += [f"{_processes(r)} of {self.world_size} failed while {what}: {msg}" for msg, r in others.items()]
        exc = DistributedError("\n".join(lines))
        exc.exit_code = code
        raise exc

    def on_root(self, what: str, fn: Callable[[], T]) -> T:
        result, error, failure = _attempt(fn) if self.is_root else (None, None, None)
        failure, value = self.broadcast((failure, result), what)
        if failure is None:
            return value
        if error is not None:
            raise error
        raise _quiet(DistributedError(f"stopped: process 0 failed while {what}: {failure[1]}"), failure[0])

    def same_everywhere(self, what: str, value: Any, fix: str) -> None:
        values = self.gather(f"comparing {what}", value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise self.alike(DistributedError(
                f"the {self.world_size} processes disagree on {what}: {_processes(differ)} differ from "
                f"process 0 ({_difference(values[0], values[differ[0]], differ[0])}). {fix}"))

    def alike(self, exc: FmclfError) -> FmclfError:
        return exc if self.is_root else _quiet(exc)

    def share_model(self, module: Any) -> None:
        import torch

        self._buffers = [b for b in module.buffers() if b.is_floating_point()]
        with torch.no_grad():
            for group in _groups([*module.parameters(), *module.buffers()]):
                flat = torch.cat([t.detach().reshape(-1) for t in group])
                _unflatten(self._collective("receiving rank 0's initial weights", "broadcast", flat, src=0), group)

    def watch(self, flag: Flag, device: Any = None) -> Flag:
        self._local = flag
        self.stop = type(flag)()  # a flag of the same kind, set only by what the gradient buffer carries
        # Reading the agreed stop flag waits for the device; on a GPU, look every 32 steps, as the engine does.
        self._stop_every = 1 if getattr(device, "type", "cpu") == "cpu" else 32
        return self.stop

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the processes: one flat all-reduce, which also averages the
        floating-point buffers and, every ``_stop_every`` steps, carries the stop request (docs/distributed.md). A
        parameter without a gradient here (unused on this shard's batch) takes part with zeros, as in DDP."""
        import torch

        check = self._steps % self._stop_every == 0 and self.stop is not None
        self._steps += 1
        with torch.no_grad():
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            for i, group in enumerate(_groups([p.grad for p in params] + self._buffers)):
                pieces = [g.reshape(-1) for g in group]
                carries_stop = check and i == 0
                if carries_stop:
                    asked = 1.0 if self._local else 0.0
                    pieces.append(torch.full((1,), asked, dtype=group[0].dtype, device=group[0].device))
                flat = self._collective("averaging gradients", "all_reduce", torch.cat(pieces))
                flat.div_(self.world_size)
                _unflatten(flat, group)
                if carries_stop and not self.stop and float(flat[-1]) > 0:
                    self.stop.request(self._local.signal if self._local else "SIGINT/SIGTERM sent to another process")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (a new tensor)."""
        return self._collective("adding up the metrics", "all_reduce", tensor.detach().clone())


@contextlib.contextmanager
def connect(environ: Mapping[str, str] = os.environ) -> Iterator[Solo]:
    """Join the other processes of a torchrun launch (a :class:`Comm`), or :class:`Solo`
    when this process runs alone; leave the process group on exit if this call made it.

    The group is ``gloo`` on a machine without CUDA and ``cpu:gloo,cuda:nccl``
    with it: CUDA tensors travel through nccl, everything else through gloo.
    """
    launch = launch_from_env(environ)
    if launch is None:
        yield Solo()
        return
    timeout = timeout_seconds(environ)
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError(f"WORLD_SIZE is {launch.world_size}, but this torch was built without torch.distributed. "
                         f"Train in one process.")
    owned = not dist.is_initialized()
    if owned:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        try:
            dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size,
                                    timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as exc:
            where = f"{environ.get('MASTER_ADDR', '?')}:{environ.get('MASTER_PORT', '?')}"
            raise DistributedError(
                f"process {launch.rank} could not join the other {launch.world_size - 1} at {where} "
                f"({_first_line(exc)}). Start all {launch.world_size} with torchrun (--nnodes, --nproc-per-node, "
                f"--rdzv-endpoint reachable from every node), or set {TIMEOUT_ENV} to wait more than {timeout:g} s."
            ) from None
    else:  # the caller made the group (fmclf.run.runner called from a script of theirs)
        if (dist.get_rank(), dist.get_world_size()) != (launch.rank, launch.world_size):
            raise DistributedError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, but RANK "
                                   f"and WORLD_SIZE say {launch.rank} of {launch.world_size}. Make the group from "
                                   f"torchrun's environment.")
        backend = str(dist.get_backend())
    try:
        yield Comm(launch, backend, timeout)
        if owned:  # leave together: a process that tore gloo down while rank 0 still drew was once killed by SIGABRT
            with contextlib.suppress(Exception):
                dist.barrier()
    finally:
        if owned:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
