"""``fmclf run --dry-run``: the settings a run would use, every option resolved, each with where its value came from.
Checks what :func:`fmclf.run.plan.resolve` checks and imports no torch. The text is TOML, each value commented with its
source, so that it can be saved and given back to ``fmclf run --config``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..host.loading import PluginHost
from ..kinds import BY_NAME
from .config import RunConfig, toml_inline, toml_key
from .plan import resolve

#: Where a value came from: ``source(setting)`` and ``option_source(target, option)``.
Source = Callable[[str], str]
OptionSource = Callable[[str, str], str]

DEFAULT = "default"
COMMAND_LINE = "command line"


def _line(key: str, value: Any, source: str, width: int) -> str:
    try:
        text = f"{toml_key(key)} = {toml_inline('none' if value is None else value)}"
    except TypeError:  # a default TOML cannot hold (an object): shown, and left out when read back
        text = f"# {key} = {value!r}"
    return f"{text:<{width}}  # {source}"


def explain(config: RunConfig, host: PluginHost, *, source: Source, option_source: OptionSource,
            run_dir: str, heading: str = "the settings this run would use") -> str:
    """The dry run's text for ``config``: every setting and every option of every component
    (defaults filled in, checked as a run checks them), each with ``source(...)``."""
    plan = resolve(dataclasses.replace(config, options={t: dict(o) for t, o in config.options.items()}), host)
    settings = [(f.name, getattr(plan.config, f.name)) for f in dataclasses.fields(RunConfig) if f.name != "options"]
    width = max(33, *(len(f"{toml_key(k)} = {toml_inline(v)}") for k, v in settings if v is not None))
    lines = [
        f"# fmclf run --dry-run: {heading}; nothing was trained or written.",
        "# After each value: where it came from (default, config file, command line).",
        "# Saved as a file, this is a config: `fmclf run --config FILE` runs it.",
        f"# run folder: {run_dir}",
    ]
    for key, value in settings:
        if key == "from_python" and not value:  # what fmclf.fit records of Python objects: nothing to say here
            continue
        if key == "seed" and plan.seed_drawn:
            lines.append(f"{'# seed: drawn when the run starts':<{width}}  # {source(key)}")
        elif value is None:  # TOML has no null: an unset setting is left out of a config file
            lines.append(f"{f'# {key}: unset':<{width}}  # {source(key)}")
        else:
            lines.append(_line(key, value, source(key), width))
    for target, record in plan.records.items():
        row = BY_NAME[record.kind]
        table = f"options.{row.name}" + (f".{toml_key(target.split('.', 1)[1])}" if row.many else "")
        lines += ["", f"[{table}]  # {record.describe()}"]
        values = plan.options[target]
        if not values:
            lines.append("# (no options)")
        for name, value in values.items():
            lines.append(_line(name, value, option_source(target, name), width))
    return "\n".join(lines)
