"""What produced a run: versions, device, threads and the plugin behind each component."""

from __future__ import annotations

import pathlib
import platform
import time
from typing import Any

from .. import __version__
from ..host.loading import PluginHost
from . import folder
from .plan import Plan


def record(plan: Plan, host: PluginHost, device: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced a run: versions, device and the plugin behind each component."""
    import torch

    return {
        "fmclf": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),  # a CPU run's last bits can depend on it
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "components": plan.components(),
        "plugins": {p.info.name: f"{p.info.describe()} ({p.info.module})" for p in host.plugins},
        **(extra or {}),
    }


def resumed(run_dir: pathlib.Path, now: dict[str, Any]) -> dict[str, Any]:
    """The run's recorded [provenance], with one line added for this resume."""
    import tomllib

    try:
        recorded = tomllib.loads((run_dir / folder.CONFIG).read_text(encoding="utf-8")).get("provenance")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        recorded = None
    if not isinstance(recorded, dict):
        return now
    line = f"{now['started']} on {now['device']} (fmclf {now['fmclf']}, torch {now['torch']})"
    return {**recorded, "resumed": [*recorded.get("resumed", []), line]}
