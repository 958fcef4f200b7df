"""Turning ``--device`` into a ``torch.device`` that exists, or a clear error:
for a process on its own (:func:`resolve_device`) and for each process of a
torchrun launch (:func:`launch_device`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import DeviceError
from ..wording import flag

if TYPE_CHECKING:
    from ..dist.launch import Launch

_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def available_devices() -> list[str]:
    """Devices this machine can run on, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_spec(spec: str) -> str:
    """Check the form of a device string without importing torch."""
    text = spec.strip().lower()
    m = _SPEC.match(text)
    if not m or (m.group(2) is not None and m.group(1) in ("auto", "cpu")):
        raise DeviceError(f"unknown device {spec!r}. Use auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
    return text


def resolve_device(spec: str):
    """``auto`` picks cuda, then mps, then cpu; anything named must be available."""
    import torch

    text = check_spec(spec)
    kind, _, index = text.partition(":")
    available = ", ".join(available_devices())
    instead = f"Use {flag('device', 'cpu')} or {flag('device', 'auto')}."
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError(f"device 'mps' is not available on this machine (it needs Apple silicon and a torch "
                              f"built with MPS). Available: {available}. {instead}")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = ("this torch was built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
        raise DeviceError(f"device {text!r} is not available: {why}. Available: {available}. {instead}")
    n = torch.cuda.device_count()
    i = int(index) if index else torch.cuda.current_device()
    if i >= n:
        raise DeviceError(f"device {text!r} does not exist: this machine has {n} CUDA device(s). "
                          f"Available: {available}.")
    return torch.device("cuda", i)


def launch_device(spec: str, launch: Launch, backend: str):
    """The device this process of ``launch`` trains on: cpu (gloo), or cuda:LOCAL_RANK (nccl), made the current
    CUDA device; never mps, which has no collective backend. ``backend`` is the process group's."""
    if launch.world_size == 1:
        return resolve_device(spec)
    import torch

    text = check_spec(spec)
    kind, _, index = text.partition(":")
    world = launch.world_size
    if kind == "mps":
        raise DeviceError(f"{flag('device', 'mps')} cannot be shared by {world} processes: PyTorch has no "
                          f"collective backend for Apple's GPU, so they could not average their gradients. Use "
                          f"{flag('device', 'cpu')} under torchrun (gloo), or train in one process with "
                          f"{flag('device', 'mps')}.")
    if kind == "cpu" or (kind == "auto" and "nccl" not in backend):  # nccl: CUDA is there and usable
        return torch.device("cpu")
    resolve_device("cuda")  # the plain "no CUDA here" message when there is none
    if "nccl" not in backend:
        raise DeviceError(f"{flag('device', text)} with {world} processes needs NCCL, which this torch lacks (its "
                          f"process group is {backend}). Use {flag('device', 'cpu')}, or a torch built with NCCL.")
    count = torch.cuda.device_count()
    if index and launch.local_world_size > 1:
        raise DeviceError(f"{flag('device', text)} names one GPU, but torchrun started {launch.local_world_size} "
                          f"processes on this node and each trains on the GPU of its local rank (cuda:LOCAL_RANK). "
                          f"Use {flag('device', 'cuda')} (or auto); choose the GPUs with CUDA_VISIBLE_DEVICES.")
    i = int(index) if index else launch.local_rank
    if i >= count:
        raise DeviceError(f"process {launch.rank} (local rank {launch.local_rank}) trains on cuda:{i}, but this "
                          f"node has {count} GPU(s). Start at most {count} process(es) per node "
                          f"(torchrun --nproc-per-node {count}), or use {flag('device', 'cpu')}.")
    torch.cuda.set_device(i)  # nccl's communicators and object collectives use the current device
    return torch.device("cuda", i)
