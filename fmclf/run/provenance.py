"""What produced a run: versions, device, threads and the plugin behind each component."""

from __future__ import annotations

import pathlib
import platform
import time
from typing import Any

from .. import __version__
from ..host.loading import PluginHost
from ..kinds import ROWS
from . import folder, processes
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


def of_session(plan: Plan, host: PluginHost, comm: Any, device: Any,
               resumed_from: pathlib.Path | None = None) -> dict[str, Any]:
    """The [provenance] a session writes into its run's config.toml: :func:`record`, with the processes it
    trains in (:func:`fmclf.run.processes.describe`); ``resumed_from``: the run folder it continues, whose
    recorded provenance it extends (:func:`resumed`). A run started, resumed or trained in a group all ask here."""
    now = record(plan, host, device, processes.describe(comm, device))
    return now if resumed_from is None else resumed(resumed_from, now)


def recorded_provenance(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """The [provenance] table of a run folder's config.toml (None when it cannot be read)."""
    try:
        found = folder.read_config_table(run_dir).get("provenance")
    except (OSError, ValueError):  # (TooLarge, UnicodeDecodeError and TOMLDecodeError are ValueErrors)
        return None
    return found if isinstance(found, dict) else None


def pin_names(settings: dict[str, Any], run_dir: pathlib.Path) -> dict[str, Any]:
    """A run's component settings by the qualified names its provenance recorded, where config.toml
    has plain ones (folders written before config.toml recorded qualified names): a plugin installed
    since, registering the same name, must not change what the run resumes with."""
    components = (recorded_provenance(run_dir) or {}).get("components")
    if not isinstance(components, dict):
        return settings
    out = dict(settings)
    for row in ROWS:
        name, recorded = out.get(row.setting), components.get(row.name)
        if row.many or not isinstance(name, str) or ":" in name or not isinstance(recorded, str):
            continue
        qualified = recorded.split(" ")[0]
        if qualified.rpartition(":")[2] == name:
            out[row.setting] = qualified
    return out


def resumed(run_dir: pathlib.Path, now: dict[str, Any]) -> dict[str, Any]:
    """The run's recorded [provenance], with one line added for this resume."""
    recorded = recorded_provenance(run_dir)
    if recorded is None:
        return now
    line = f"{now['started']} on {now['device']} (fmclf {now['fmclf']}, torch {now['torch']})"
    recorded = folder.as_plain(recorded)  # a date TOML read (say) as text: fmclf writes none back
    before = recorded.get("resumed", [])
    before = [str(x) for x in before] if isinstance(before, list) else []  # a hand-edited one is not a reason to fail
    return {**recorded, "resumed": [*before, line]}
