"""How much memory a run took at its peak, for the run's summary."""

from __future__ import annotations

import sys
from typing import Any


def peak_memory(device: Any) -> dict[str, float]:
    """Peak resident memory of this process in MB (``peak_rss_mb``) and, on a CUDA device, the most torch had
    allocated there (``peak_cuda_mb``); either is left out where it cannot be read."""
    out: dict[str, float] = {}
    try:
        import resource
    except ImportError:  # Windows
        pass
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
        out["peak_rss_mb"] = round(peak / 2**20 if sys.platform == "darwin" else peak / 2**10, 1)
    if getattr(device, "type", None) == "cuda":
        import torch

        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def describe(memory: dict[str, float], device: Any) -> str:
    """``"612 MB resident, 230 MB on cuda:0"``."""
    where = {"peak_rss_mb": "resident", "peak_cuda_mb": f"on {device}"}
    return ", ".join(f"{memory[key]:.0f} MB {w}" for key, w in where.items() if key in memory) or "not measurable here"
