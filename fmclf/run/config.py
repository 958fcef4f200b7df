"""A run's settings: defaults, the TOML file ``--config`` reads, and the
resolved copy a run folder keeps (which ``--config`` accepts back)."""

from __future__ import annotations

import math
import pathlib
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .devices import check_spec
from ..errors import ConfigError, UsageError
from ..kinds import BY_NAME, ROWS

#: What a divergence message advises when the loss has no divergence_hint of its own: the
#: default loss is the stable one (this module is where the core may name a built-in).
DIVERGENCE_ADVICE = "Try a smaller --lr, or --loss fused, which stays finite for any finite logits."


@dataclass
class RunConfig:
    """Everything that decides what a run computes. Defaults are the textbook's."""

    dataset: str = "fashion-mnist"
    model: str = "scratch"
    loss: str = "fused"
    updater: str = "sgd"
    visualizers: list[str] = field(default_factory=lambda: ["tqdm"])
    device: str = "auto"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    seed: int | None = None
    #: replay the training as CUDA graphs (see fmclf.train.graphs); None: whenever the device is CUDA
    #: and the parts allow it. A run records what it did.
    cuda_graphs: bool | None = None
    #: CPU threads for torch's operations; None: chosen by the run (fmclf.run.threads), which records its choice
    threads: int | None = None
    #: component options by target: "dataset", "model", "loss", "updater", "visualizer.NAME"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def targets(self) -> dict[str, str]:
        """Option target -> component name, for every component of this run (see :mod:`fmclf.kinds`)."""
        out = {}
        for row in ROWS:
            chosen = getattr(self, row.setting)
            out.update({row.target(name): name for name in (chosen if row.many else [chosen])})
        return out

    def validate(self) -> None:
        """Reject impossible settings before any work starts."""
        def bad(what: str, fix: str) -> UsageError:
            return UsageError(f"{what}. {fix}")

        if not _is_int(self.epochs) or self.epochs < 1:
            raise bad(f"--epochs must be a whole number of at least 1, got {self.epochs!r}",
                      "Train for one epoch or more.")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise bad(f"--batch-size must be a whole number of at least 1, got {self.batch_size!r}",
                      f"The textbook uses {RunConfig.batch_size}.")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise bad(f"--lr must be a finite number above 0, got {self.lr!r}", f"The textbook uses {RunConfig.lr}.")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise bad(f"--seed must be a whole number from 0 to 2**63-1, got {self.seed!r}",
                      "Any such number repeats a CPU run exactly.")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise bad(f"--threads must be a whole number of at least 1, got {self.threads!r}",
                      "Leave it out to let the run choose.")
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            raise bad(f"cuda_graphs must be true or false, got {self.cuda_graphs!r}",
                      "Leave it out to use them on CUDA whenever the run's parts allow it.")
        if not self.visualizers:
            raise bad("no visualizer is selected", "Use --visualizer none to show nothing.")
        if not isinstance(self.visualizers, (list, tuple)) \
                or not all(isinstance(v, str) and v for v in self.visualizers):
            raise bad(f"visualizers must be a list of names, got {self.visualizers!r}",
                      "`fmclf plugins --kind visualizer` lists them.")
        for name in [*(row.setting for row in ROWS if not row.many), "device"]:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise bad(f"{name} must be a non-empty name, got {value!r}", "`fmclf plugins` lists the names.")
        check_spec(self.device)  # its form; whether this machine has it needs torch, later
        unknown = set(self.options) - set(self.targets())
        if unknown:
            raise ConfigError(
                f"options are set for {', '.join(sorted(unknown))}, which this run does not use "
                f"(it uses: {', '.join(self.targets())}). Remove them or add the component."
            )

    def to_toml(self, provenance: dict[str, Any] | None = None, header: str = "") -> str:
        """The settings as TOML; ``provenance`` is recorded but ignored when read back."""
        top = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        if top["seed"] is None:
            del top["seed"]
        doc: dict[str, Any] = dict(top)
        options: dict[str, Any] = {}
        for target, values in self.options.items():
            node = options
            for part in target.split(".", 1):  # "visualizer.NAME": NAME may hold dots
                node = node.setdefault(part, {})
            node.update({k: _option_value(v) for k, v in values.items() if _writable(v)})
        if options:
            doc["options"] = options
        if provenance:
            doc["provenance"] = provenance
        return header + dumps(doc)


def _option_value(value: Any) -> Any:
    # TOML has no null; "none" is what -o takes for None, and what the option parses back.
    return "none" if value is None else value


def _writable(value: Any) -> bool:
    """Whether a value survives the trip through TOML. Only a default can fail to
    (values from the command line or a file are scalars); leaving it out of the
    file leaves it at that same default when the file is read back."""
    if value is None:
        return True
    try:
        _value(value)
    except TypeError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KEYS = {f.name for f in fields(RunConfig)} - {"options"}


def load_config(path: str | pathlib.Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a run file: ``(settings, options)``; settings hold only the keys present."""
    path = pathlib.Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist. Pass the path of a TOML file, such as a "
                          f"run folder's config.toml.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}. Fix the line it names.") from None
    data.pop("provenance", None)  # what produced a recorded run; not a setting
    raw_options = data.pop("options", {})
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r} has unknown setting(s) {', '.join(sorted(unknown))}; "
            f"settings are: {', '.join(sorted(_KEYS))}, and an [options.KIND] table per component."
        )
    for setting in (row.setting for row in ROWS if row.many):
        if isinstance(data.get(setting), str):
            data[setting] = [data[setting]]
        names = data.get(setting, [])
        if not (isinstance(names, list) and all(isinstance(v, str) for v in names)):
            example = ", ".join(f'"{v}"' for v in getattr(RunConfig(), setting)) or '"NAME"'
            raise ConfigError(f"config file {str(path)!r}: {setting} must be a list of names, such as [{example}].")
    if not isinstance(raw_options, dict):
        raise ConfigError(f"config file {str(path)!r}: 'options' must be a table such as [options.model].")
    options: dict[str, dict[str, Any]] = {}
    for kind, table in raw_options.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {str(path)!r}: options.{kind} must be a table of option = value.")
        if kind in BY_NAME and BY_NAME[kind].many:
            for name, sub in table.items():
                if not isinstance(sub, dict):
                    raise ConfigError(f"config file {str(path)!r}: {kind} options go in [options.{kind}.NAME] tables.")
                options[BY_NAME[kind].target(name)] = dict(sub)
        else:
            options[kind] = dict(table)
    return data, options


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, pathlib.PurePath):
        value = str(value)
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if ch < " " or ch == "\x7f" else ch)
                             for ch in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def dumps(doc: dict[str, Any], prefix: str = "") -> str:
    """Write a dict of scalars, lists and nested dicts as TOML (tomllib reads it back)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict) and v is not None]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_key(k)}" if prefix else _key(k)
            body = dumps(v, name)
            if any(not isinstance(x, dict) for x in v.values()) or not v:
                out += f"\n[{name}]\n"
            out += body
    return out


def merge(config: RunConfig, explicit: set[str], settings: dict[str, Any],
          options: dict[str, dict[str, Any]]) -> RunConfig:
    """Lay a config file (``settings``, ``options`` from :func:`load_config`) under
    ``config``, whose fields named in ``explicit`` came from the command line and win.

    The file's options for a component go only to that same component: when the
    command line picks another model, the file's model options are dropped
    rather than handed to a model that never declared them.
    """
    merged = replace(config, visualizers=list(config.visualizers), options={})
    for key, value in settings.items():
        if key not in explicit:
            setattr(merged, key, value)
    from_file = replace(RunConfig(), **{k: v for k, v in settings.items() if k in _KEYS})
    file_targets, targets = from_file.targets(), merged.targets()
    merged.options = {t: dict(v) for t, v in options.items()
                      if t not in file_targets or targets.get(t) == file_targets[t]}
    for target, values in config.options.items():
        merged.options.setdefault(target, {}).update(values)
    return merged
