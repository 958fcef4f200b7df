"""Turning ``--device`` into a ``torch.device`` that exists, or a clear error."""

from __future__ import annotations

import re

from ..errors import DeviceError

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
        raise DeviceError(
            f"unknown device {spec!r}. Use auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."
        )
    return text


def resolve_device(spec: str):
    """``auto`` picks cuda, then mps, then cpu; anything named must be available."""
    import torch

    text = check_spec(spec)
    kind, _, index = text.partition(":")
    available = ", ".join(available_devices())
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError(
                f"device 'mps' is not available on this machine (it needs Apple silicon and a torch "
                f"built with MPS). Available: {available}. Use --device cpu or --device auto."
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
        raise DeviceError(
            f"device {text!r} is not available: {why}. Available: {available}. "
            f"Use --device cpu or --device auto."
        )
    n = torch.cuda.device_count()
    i = int(index) if index else torch.cuda.current_device()
    if i >= n:
        raise DeviceError(f"device {text!r} does not exist: this machine has {n} CUDA device(s). Available: {available}.")
    return torch.device("cuda", i)
