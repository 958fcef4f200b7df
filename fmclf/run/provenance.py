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

    from ..atomic import read_limited
    from .config import CONFIG_LIMIT

    try:
        recorded = tomllib.loads(read_limited(run_dir / folder.CONFIG, CONFIG_LIMIT).decode("utf-8")).get("provenance")
    except (OSError, ValueError):  # (TooLarge, UnicodeDecodeError and TOMLDecodeError are ValueErrors)
        recorded = None
    if not isinstance(recorded, dict):
        return now
    line = f"{now['started']} on {now['device']} (fmclf {now['fmclf']}, torch {now['torch']})"
    recorded = _plain(recorded)
    before = recorded.get("resumed", [])
    before = [str(x) for x in before] if isinstance(before, list) else []  # a hand-edited one is not a reason to fail
    return {**recorded, "resumed": [*before, line]}


def _plain(value: Any) -> Any:
    """``value`` with anything TOML read that fmclf does not write back (a date, say) turned to text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
