"""Data-parallel training across the processes torchrun starts.

torchrun starts one process per device and tells each, through its
environment, who it is (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and where
the others are (``MASTER_ADDR``, ``MASTER_PORT``). :func:`connect` joins them
into one process group and returns a :class:`Comm`; outside torchrun, or with
one process, it returns :class:`Solo`, which has the same methods and costs
nothing, so the runner never asks which it has.

How a distributed run works:

- each process holds only its shard of the data (the data set's factory gets
  ``shard=(rank, world_size)``) and takes ``batch_size / world_size`` examples
  a step. After ``backward``, :meth:`Comm.average_gradients` all-reduces the
  gradients as one flat buffer (one all-reduce a step, not one per parameter),
  so every process applies the mean gradient of the global batch; the weights
  start identical (rank 0 broadcasts its own) and so stay identical;
- training metrics and the test confusion matrix are summed over processes;
- rank 0 alone prints, draws and writes the run folder. The drawn seed, the
  run folder's path and, on resume, the checkpoint travel from rank 0 to the
  others, so no other process needs to see rank 0's disk;
- start-up work that can fail runs under :meth:`Comm.agree` or
  :meth:`Comm.on_root`: a failure in one process stops all of them, with one
  message from rank 0, instead of leaving the others waiting. Later, a process
  that dies makes the others' next collective fail (its connections close, or
  ``FMCLF_DIST_TIMEOUT`` seconds pass) with a message that says so;
- a stop request (SIGINT/SIGTERM) travels in the gradient buffer, so every
  process stops after the same batch and rank 0's checkpoint fits them all.

Why an explicit all-reduce and not ``DistributedDataParallel``: the model
stays the plugin's own module, so its ``state_dict`` and checkpoints are a
one-process run's (no ``module.`` prefix) and updaters and visualizers see
what the plugin built; the scratch model's transposed ``W`` gets gradients
whose strides DDP's bucket views do not match (a warning and a copy each
step); and DDP's gain, overlapping communication with a deep backward pass,
is nil for a model whose backward is one matrix product.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

from ..errors import DataError, DeviceError, DistributedError, FmclfError, UsageError

if TYPE_CHECKING:
    import torch

    from ..run.plan import Plan
    from ..train.engine import StopFlag, TrainState

T = TypeVar("T")
TIMEOUT_ENV = "FMCLF_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  #: seconds a collective waits for a silent process


@dataclasses.dataclass(frozen=True)
class Launch:
    """This process's place in a launch, as torchrun's environment tells it."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def nodes(self) -> int:
        return max(self.world_size // max(self.local_world_size, 1), 1)


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r} is not a whole number. torchrun sets it; start fmclf with `torchrun ... -m fmclf run ...`.") from None


def launch_from_env(environ: Mapping[str, str] = os.environ) -> Launch | None:
    """This process's :class:`Launch`, or None when it runs alone (no ``WORLD_SIZE``, or one process)."""
    world = _env_int(environ, "WORLD_SIZE", None)
    if world is None or world <= 1:
        return None
    rank = _env_int(environ, "RANK", None)
    if rank is None or not 0 <= rank < world:
        raise UsageError(
            f"WORLD_SIZE is {world} but RANK is {environ.get('RANK')!r}; each of the {world} processes needs "
            f"a RANK from 0 to {world - 1}. Start them with torchrun (`torchrun --nproc-per-node N -m fmclf run ...`), which sets both."
        )
    local_rank = _env_int(environ, "LOCAL_RANK", 0)
    local_world = _env_int(environ, "LOCAL_WORLD_SIZE", world)
    return Launch(rank, world, local_rank, local_world)


def process_label(environ: Mapping[str, str] = os.environ) -> str:
    """``"[rank R] "`` in a process other than rank 0 of a launch, else ``""``: a prefix for its messages."""
    try:
        launch = launch_from_env(environ)
    except FmclfError:
        return ""
    return f"[rank {launch.rank}] " if launch is not None and launch.rank != 0 else ""


def is_root_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process reports to the user: rank 0 of a launch, or a process on its own."""
    return process_label(environ) == ""


def timeout_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """How long a collective waits for a silent process: ``$FMCLF_DIST_TIMEOUT`` or 600 s."""
    text = environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds above 0 (default {DEFAULT_TIMEOUT:g}).")
    return value


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a ``state_dict`` (names, dtypes, shapes, bytes): equal digests, bitwise-equal weights."""
    import torch

    h = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, FmclfError) else f"{type(exc).__name__}: {exc}"


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


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _unflatten(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy ``flat``'s consecutive pieces back into ``tensors`` (whatever their strides)."""
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view(t.shape))
        offset += n


def _groups(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Tensors grouped by (device, dtype): one flat buffer, one collective per group (almost always one)."""
    out: dict[tuple[str, Any], list] = {}
    for t in tensors:
        out.setdefault((str(t.device), t.dtype), []).append(t)
    return list(out.values())


class Solo:
    """One process: the interface :class:`Comm` implements, every collective the identity."""

    rank = 0
    world_size = 1
    is_root = True
    command = "fmclf"  #: how to start the same processes again, for messages

    def agree(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in every process; if it fails in any, raise in all of them."""
        return fn()

    def on_root(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in rank 0 only and give every process its result (or its failure)."""
        return fn()

    def broadcast(self, value: T, what: str = "receiving rank 0's settings") -> T:
        """Rank 0's ``value``, in every process."""
        return value

    def same_everywhere(self, what: str, value: Any, fix: str) -> None:
        """Refuse to go on unless ``value`` is equal in every process."""

    def device_for(self, spec: str) -> torch.device:
        """The device this process trains on."""
        from ..run.devices import resolve_device

        return resolve_device(spec)

    def check_plan(self, plan: Plan) -> None:
        """Refuse, at start-up, what cannot run in this many processes."""

    def dataset_args(self, batch_size: int) -> dict[str, Any]:
        """``shard`` and per-process ``batch_size`` for :func:`fmclf.build.assemble`."""
        return {}

    def check_data(self, dataset: Any) -> None:
        """Refuse data sets whose shards would make the processes take different numbers of steps."""

    def share_model(self, module: Any) -> None:
        """Make every process's weights rank 0's, and keep its floating-point buffers
        (batch-norm statistics) averaged over the processes after every step."""

    def watch(self, flag: StopFlag) -> StopFlag:
        """Given the flag signals set, the flag the training loop should obey."""
        return flag

    def trainer_comm(self) -> Comm | None:
        """What :class:`fmclf.engine.Trainer` gets as ``comm`` (None: one process, no collectives)."""
        return None

    def global_state(self, state: TrainState) -> dict[str, Any]:
        """``state`` for a checkpoint, its partial sums of an unfinished epoch added up over processes."""
        return dataclasses.asdict(state)

    def local_state(self, saved: dict[str, Any]) -> TrainState:
        """A checkpoint's state for this process (rank 0 carries the partial sums)."""
        from ..train.engine import TrainState

        return TrainState(**saved)

    def weights_record(self, module: Any) -> dict[str, Any]:
        """What summary.json records about the processes (and their weights' digests)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The processes, for the run's provenance."""
        return {}

    def where(self, device: Any) -> str:
        """Where training runs, for the start line."""
        return str(device)

    def root_only(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """``echo`` in rank 0; elsewhere, silence."""
        return echo

    def alike(self, exc: FmclfError) -> FmclfError:
        """``exc``, raised alike in every process: reported by rank 0 only."""
        return exc


class Comm(Solo):
    """One process of a torchrun launch, joined to the others by ``torch.distributed``."""

    def __init__(self, launch: Launch, backend: str, timeout: float) -> None:
        from ..train.engine import StopFlag

        self.launch = launch
        self.rank, self.world_size = launch.rank, launch.world_size
        self.is_root = self.rank == 0
        self.backend = backend  #: the process group's ("gloo", or "cpu:gloo,cuda:nccl")
        self.timeout = timeout
        self.device: Any = None
        self.stop = StopFlag()  #: set in every process after the same batch
        self._local: StopFlag | None = None
        self._steps = 0
        self._stop_every = 1
        self._buffers: list[Any] = []
        per, nodes = launch.local_world_size, launch.nodes
        self.command = (
            f"torchrun --nproc-per-node {per} -m fmclf" if nodes == 1
            else f"torchrun --nnodes {nodes} --nproc-per-node {per} --rdzv-endpoint HOST:PORT -m fmclf"
        )

    # --- talking to the other processes -------------------------------------------------

    def _collective(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RuntimeError as exc:  # gloo, nccl and store errors are all RuntimeErrors
            raise DistributedError(
                f"process {self.rank} of {self.world_size} lost contact with the others while {what} "
                f"({_first_line(exc)}). Another process has probably failed or been stopped: look for its own "
                f"message (\"[rank N] Error: ...\"; torchrun's report names it). If one is only slow (a slow disk, a first "
                f"compilation), set {TIMEOUT_ENV} to more than {self.timeout:g} seconds."
            ) from None

    def _gather(self, what: str, value: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._collective(what, lambda: dist.all_gather_object(out, value))
        return out

    def broadcast(self, value: T, what: str = "receiving rank 0's settings") -> T:
        import torch.distributed as dist

        box = [value]
        self._collective(what, lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def agree(self, what: str, fn: Callable[[], T]) -> T:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except Exception as exc:  # every failure is shared, so that no process waits for this one
            error = exc
        failures = self._gather(what, None if error is None else (getattr(error, "exit_code", 1), _describe(error)))
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
        lines += [f"{_processes(ranks)} of {self.world_size} failed while {what}: {msg}" for msg, ranks in others.items()]
        exc = DistributedError("\n".join(lines))
        exc.exit_code = code
        raise exc

    def on_root(self, what: str, fn: Callable[[], T]) -> T:
        payload: Any = None
        error: BaseException | None = None
        if self.is_root:
            try:
                payload = (None, fn())
            except Exception as exc:
                error = exc
                payload = ((getattr(exc, "exit_code", 1), _describe(exc)), None)
        failure, value = self.broadcast(payload, what)
        if failure is None:
            return value
        if error is not None:
            raise error
        raise _quiet(DistributedError(f"stopped: process 0 failed while {what}: {failure[1]}"), failure[0])

    def same_everywhere(self, what: str, value: Any, fix: str) -> None:
        values = self._gather(f"comparing {what}", value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            exc = DistributedError(
                f"the {self.world_size} processes disagree on {what}: {_processes(differ)} differ from "
                f"process 0 ({_difference(values[0], values[differ[0]], differ[0])}). {fix}"
            )
            raise self.alike(exc)

    def alike(self, exc: FmclfError) -> FmclfError:
        return exc if self.is_root else _quiet(exc)

    # --- start-up ------------------------------------------------------------------------

    def device_for(self, spec: str) -> torch.device:
        """cpu (gloo), or cuda:LOCAL_RANK (nccl); never mps, which has no collective backend."""
        import torch

        from ..run.devices import check_spec, resolve_device

        text = check_spec(spec)
        kind, _, index = text.partition(":")
        if kind == "mps":
            raise DeviceError(
                f"--device mps cannot be shared by {self.world_size} processes: PyTorch has no collective "
                f"backend for Apple's GPU, so they could not average their gradients. Use --device cpu "
                f"under torchrun (gloo), or train in one process with --device mps."
            )
        if kind == "cpu" or (kind == "auto" and "nccl" not in self.backend):  # nccl: CUDA is there and usable
            device = torch.device("cpu")
        else:
            resolve_device("cuda")  # the plain "no CUDA here" message when there is none
            if "nccl" not in self.backend:
                raise DeviceError(
                    f"--device {text} with {self.world_size} processes needs NCCL, which this torch lacks "
                    f"(its process group is {self.backend}). Use --device cpu, or a torch built with NCCL."
                )
            count = torch.cuda.device_count()
            if index and self.launch.local_world_size > 1:
                raise DeviceError(
                    f"--device {text} names one GPU, but torchrun started {self.launch.local_world_size} "
                    f"processes on this node and each trains on the GPU of its local rank (cuda:LOCAL_RANK). "
                    f"Use --device cuda (or auto); choose the GPUs with CUDA_VISIBLE_DEVICES."
                )
            i = int(index) if index else self.launch.local_rank
            if i >= count:
                raise DeviceError(
                    f"process {self.rank} (local rank {self.launch.local_rank}) trains on cuda:{i}, but this "
                    f"node has {count} GPU(s). Start at most {count} process(es) per node "
                    f"(torchrun --nproc-per-node {count}), or use --device cpu."
                )
            torch.cuda.set_device(i)  # nccl's communicators and object collectives use the current device
            device = torch.device("cuda", i)
        self.device = device
        # Reading the agreed stop flag waits for the device; on a GPU, look every 32 steps, as the engine does.
        self._stop_every = 1 if device.type == "cpu" else 32
        return device

    def check_plan(self, plan: Plan) -> None:
        from ..run.plan import require_shardable

        b, w = plan.config.batch_size, self.world_size
        if b % w:
            lower = b // w * w
            fits = f"--batch-size {lower} or {lower + w}" if lower else f"--batch-size {w}"
            raise UsageError(
                f"--batch-size {b} is the global batch, split evenly over the {w} processes, so it must be "
                f"a multiple of {w}. Use {fits}; each process then takes batch-size / {w} examples a step, "
                f"and the run matches a one-process run with the same --batch-size."
            )
        require_shardable(plan.records["dataset"])

    def dataset_args(self, batch_size: int) -> dict[str, Any]:
        return {"shard": (self.rank, self.world_size), "batch_size": batch_size // self.world_size}

    def check_data(self, dataset: Any) -> None:
        train = dataset.train
        try:
            batches = len(train)
        except TypeError:
            batches = None
        sizes = {"training batches": batches, "training examples": getattr(train, "num_examples", None)}
        self.same_everywhere(
            "the size of their training shards", sizes,
            "Every process must take the same number of steps: the data set's factory must cut each shard "
            "(shard=(rank, world_size)) to the same length, as fmclf.data.shard does.",
        )
        if batches == 0 or sizes["training examples"] == 0:
            raise self.alike(DataError(
                f"the training set is too small to give each of the {self.world_size} processes one example. "
                f"Use fewer processes, or more data."
            ))

    def share_model(self, module: Any) -> None:
        import torch
        import torch.distributed as dist

        self._buffers = [b for b in module.buffers() if b.is_floating_point()]
        with torch.no_grad():
            for group in _groups([*module.parameters(), *module.buffers()]):
                flat = _flatten(group)
                self._collective("receiving rank 0's initial weights", lambda: dist.broadcast(flat, src=0))
                _unflatten(flat, group)

    def watch(self, flag: StopFlag) -> StopFlag:
        self._local = flag
        return self.stop

    def trainer_comm(self) -> Comm:
        return self

    # --- what the engine calls -----------------------------------------------------------

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the processes: one flat all-reduce.

        A parameter without a gradient here (unused on this shard's batch) takes
        part with zeros and gets the others' mean, as in DistributedDataParallel.
        The model's floating-point buffers (batch-norm statistics, updated by
        each process's forward pass) are averaged in the same all-reduce, so
        they too stay identical. Every ``_stop_every`` steps the buffer also
        carries this process's stop request, so that all of them see it after
        the same batch.
        """
        import torch
        import torch.distributed as dist

        check = self._steps % self._stop_every == 0
        self._steps += 1
        with torch.no_grad():
            grads = []
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
            for i, group in enumerate(_groups(grads + self._buffers)):
                pieces = [g.reshape(-1) for g in group]
                carries_stop = check and i == 0
                if carries_stop:
                    asked = 1.0 if self._local else 0.0
                    pieces.append(torch.full((1,), asked, dtype=group[0].dtype, device=group[0].device))
                flat = torch.cat(pieces)
                self._collective("averaging gradients", lambda: dist.all_reduce(flat))
                flat.div_(self.world_size)
                _unflatten(flat, group)
                if carries_stop and not self.stop and float(flat[-1]) > 0:
                    self.stop.request(self._local.signal if self._local else "SIGINT/SIGTERM sent to another process")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (a new tensor)."""
        import torch.distributed as dist

        out = tensor.detach().clone()
        self._collective("adding up the metrics", lambda: dist.all_reduce(out))
        return out

    # --- checkpoints and the end -----------------------------------------------------------

    def global_state(self, state: TrainState) -> dict[str, Any]:
        import torch

        saved = dataclasses.asdict(state)
        if state.batch:  # stopped mid-epoch: the checkpoint keeps the partial sums of every process
            sums = self.sum(torch.tensor([state.loss_sum, state.correct, state.examples], dtype=torch.float64))
            saved.update(loss_sum=float(sums[0]), correct=int(sums[1]), examples=int(sums[2]))
        return saved

    def local_state(self, saved: dict[str, Any]) -> TrainState:
        state = super().local_state(saved)
        if not self.is_root:  # rank 0 carries the sums so far; the epoch's end adds them up once
            state.loss_sum, state.correct, state.examples = 0.0, 0, 0
        return state

    def weights_record(self, module: Any) -> dict[str, Any]:
        digests = self._gather("comparing the final weights", weights_digest(module.state_dict()))
        return {**self.describe(), "weights_sha256": digests, "weights_identical": len(set(digests)) == 1}

    def describe(self) -> dict[str, Any]:
        device = getattr(self.device, "type", "cpu")
        return {"processes": self.world_size, "nodes": self.launch.nodes, "backend": "nccl" if device == "cuda" else "gloo"}

    def where(self, device: Any) -> str:
        d = self.describe()
        nodes = f" on {d['nodes']} nodes" if d["nodes"] > 1 else ""
        return f"{getattr(device, 'type', device)} x {self.world_size} processes{nodes} ({d['backend']})"

    def root_only(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        return echo if self.is_root else (lambda text: None)


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
        raise UsageError(f"WORLD_SIZE is {launch.world_size}, but this torch was built without torch.distributed. Train in one process.")
    owned = not dist.is_initialized()
    if owned:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        try:
            dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as exc:
            where = f"{environ.get('MASTER_ADDR', '?')}:{environ.get('MASTER_PORT', '?')}"
            raise DistributedError(
                f"process {launch.rank} could not join the other {launch.world_size - 1} at {where} "
                f"({_first_line(exc)}). Start all {launch.world_size} with torchrun (--nnodes, --nproc-per-node, "
                f"--rdzv-endpoint reachable from every node), or set {TIMEOUT_ENV} to wait more than {timeout:g} s."
            ) from None
    else:  # the caller made the group (fmclf.runner called from a script of theirs)
        if (dist.get_rank(), dist.get_world_size()) != (launch.rank, launch.world_size):
            raise DistributedError(
                f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, but RANK and "
                f"WORLD_SIZE say {launch.rank} of {launch.world_size}. Make the group from torchrun's environment."
            )
        backend = str(dist.get_backend())
    comm = Comm(launch, backend, timeout)
    try:
        yield comm
    finally:
        if owned:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
