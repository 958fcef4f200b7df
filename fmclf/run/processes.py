"""What a run says and records about the processes it trains in: nothing for one process on its own; under
torchrun its start line, provenance, summary.json and resume advice name the processes, nodes and backend,
and every process's final weights are compared by digest.
"""

from __future__ import annotations

import hashlib
import pathlib
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..wording import Echo, current

if TYPE_CHECKING:
    import torch

    from ..dist.comm import Solo
    from ..dist.launch import Launch


def restart_command(launch: Launch) -> str:
    """How to start the same processes again, for messages: ``fmclf``, or the torchrun line."""
    per, nodes = launch.local_world_size, launch.nodes
    if launch.world_size == 1:
        return "fmclf"
    if nodes == 1:
        return f"torchrun --nproc-per-node {per} -m fmclf"
    return f"torchrun --nnodes {nodes} --nproc-per-node {per} --rdzv-endpoint HOST:PORT -m fmclf"


def resume_command(run_dir: pathlib.Path | None, launch: Launch | None = None) -> str:
    """How to continue the run in ``run_dir``, for messages: the front end's call (``fmclf.fit(resume=...)``)
    where it words one, else ``fmclf run --resume DIR`` started as ``launch`` started this run (None: alone)."""
    resume = current().resume
    if resume is not None:
        return resume(run_dir)
    start = "fmclf" if launch is None else restart_command(launch)
    return f"{start} run --resume {shlex.quote(str(run_dir))}"


def describe(comm: Solo, device: Any) -> dict[str, Any]:
    """The processes, for the run's provenance (nothing for a process on its own)."""
    if comm.world_size == 1:
        return {}
    backend = "nccl" if getattr(device, "type", "cpu") == "cuda" else "gloo"
    return {"processes": comm.world_size, "nodes": comm.launch.nodes, "backend": backend}


def where(comm: Solo, device: Any) -> str:
    """Where training runs, for the start line: ``cpu``, or ``cpu x 2 processes (gloo)``."""
    if comm.world_size == 1:
        return str(device)
    d = describe(comm, device)
    nodes = f" on {d['nodes']} nodes" if d["nodes"] > 1 else ""
    return f"{getattr(device, 'type', device)} x {comm.world_size} processes{nodes} ({d['backend']})"


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a ``state_dict`` (names, dtypes, shapes, bytes): equal digests, bitwise-equal weights."""
    import torch

    h = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_record(comm: Solo, module: Any, device: Any) -> dict[str, Any]:
    """:func:`describe` and every process's final weights' digest, for summary.json (every process calls it)."""
    if comm.world_size == 1:
        return {}
    digests = comm.gather("comparing the final weights", weights_digest(module.state_dict()))
    return {**describe(comm, device), "weights_sha256": digests, "weights_identical": len(set(digests)) == 1}


def root_only(comm: Solo, echo: Echo) -> Echo:
    """``echo`` in rank 0; elsewhere, silence: only rank 0 talks to the user."""
    return echo if comm.is_root else lambda text: None
