"""A run's settings: defaults, the TOML file ``--config`` reads, and the resolved copy a run folder keeps (which
``--config`` accepts back)."""

from __future__ import annotations

import contextlib
import pathlib
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import tomli_w

from ..atomic import TooLarge, read_limited
from ..errors import ConfigError, UsageError
from ..kinds import BY_NAME, ROWS
from ..numbers import is_number, is_whole
from ..wording import flag
from .devices import check_spec
from .folder import CONFIG, FILES


def divergence_advice() -> str:
    """What a divergence message advises when the loss has no divergence_hint of its own: the
    default loss is the stable one (this module is where the core may name a built-in)."""
    return f"Try a smaller {flag('lr')}, or {flag('loss', 'fused')}, which stays finite for any finite logits."

#: The built-in metrics every run records without being asked, and the key each is recorded under
#: (valid_acc, test_acc; valid_loss, test_loss): naming one with --metric adds nothing.
RECORDED_METRICS: dict[str, str] = {"accuracy": "acc", "loss": "loss"}

#: The bounds of the core numbers (beyond them a run cannot work, or the thread library aborts):
MAX_EPOCHS = 10**9
MAX_BATCH = 2**31 - 1
MAX_THREADS = 1024

#: What ``fmclf.fit`` shows by default: in Jupyter the textbook's live curves (the command line's is tqdm).
NOTEBOOK_VISUALIZERS = ("animator",)

#: What ``--resume`` (and ``fmclf.fit(..., resume=)``) may change; the rest is fixed by the run's config.toml.
#: Visualizers only show, so they may change; metrics and callbacks decide what a run records and when it
#: stops, so they may not.
RESUMABLE = ("epochs", "device", "threads", "cuda_graphs", "visualizers")

#: The keys of a setting's help and check in its field's metadata (see :func:`setting`).
HELP, CHECK = "help", "check"

#: What a setting's check gets: its name, its value and its default; it returns what is wrong and what to do
#: (one paragraph), or None when the value is fine.
Check = Callable[[str, Any, Any], str | None]


def setting(default: Any, help: str, check: Check | None = None) -> Any:
    """A field of :class:`Settings` that is a setting of its own (not a component): ``fmclf run`` takes it as
    a flag and ``fmclf.fit`` as a keyword, and ``help`` (a sentence or two; ``[default: ...]`` at its end
    says what an unset None means) is what ``fmclf run --help`` and ``help(fmclf.fit)`` show for it.
    ``check`` is the rule :meth:`Settings.validate` holds its value to, before any work."""
    return field(default=default, metadata={HELP: help, CHECK: check})


def _counted(most: int, fix: str, fewer: str, most_shown: str = "") -> Check:
    """A whole number from 1 to ``most`` (a count of epochs, of examples)."""
    def check(name: str, value: Any, default: Any) -> str | None:
        if not is_whole(value) or value < 1:
            return f"{flag(name)} must be a whole number of at least 1, got {value!r}. {fix.format(default=default)}"
        if value > most:
            return f"{flag(name)} must be at most {most:,}{most_shown}, got {value:,}. {fewer}"
        return None
    return check


def _whole_or_none(least: int, most: int, fix: str, most_shown: str = "") -> Check:
    """None (the run chooses, or draws), or a whole number from ``least`` to ``most``."""
    def check(name: str, value: Any, default: Any) -> str | None:
        if value is not None and (not is_whole(value) or not least <= value <= most):
            return f"{flag(name)} must be a whole number from {least} to {most_shown or most}, got {value!r}. {fix}"
        return None
    return check


def _positive(name: str, value: Any, default: Any) -> str | None:
    """A finite number above 0."""
    if not is_number(value, finite=True) or value <= 0:
        return f"{flag(name)} must be a finite number above 0, got {value!r}. The textbook uses {default}."
    return None


def _graphs(name: str, value: Any, default: Any) -> str | None:
    """None (decided by the run), true or false; named as config.toml names it (its flag gives nothing else)."""
    if value is not None and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}. Leave it out to use them on CUDA whenever the run's " \
               f"parts allow it."
    return None


def _device(name: str, value: Any, default: Any) -> str | None:
    """A device's form; whether this machine has it needs torch, later."""
    if not isinstance(value, str) or not value:
        return f"{name} must be a non-empty name, got {value!r}. `fmclf plugins` lists the names."
    check_spec(value)
    return None


@dataclass(frozen=True)
class Settings:
    """Everything that decides what a run computes. Defaults are the textbook's. Frozen: a changed
    copy is ``dataclasses.replace(settings, ...)``, so no step of a run rewrites what another read."""

    dataset: str = "fashion-mnist"
    model: str = "scratch"
    loss: str = "fused"
    updater: str = "sgd"
    visualizers: list[str] = field(default_factory=lambda: ["tqdm"])
    #: metrics recorded beside accuracy and loss (which every run records), on valid and test
    metrics: list[str] = field(default_factory=list)
    #: callbacks, which may stop the run (early stopping) or keep files (the best weights)
    callbacks: list[str] = field(default_factory=list)
    # The settings below are each a flag of `fmclf run` (cli/run.py) and a keyword of `fmclf.fit`, both made
    # from the field: its name (batch_size: --batch-size; a bool: --NAME/--no-NAME), type, default and help.
    # They are listed in the order `fmclf run --help` shows them.
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.", _device)
    #: replay the training as CUDA graphs (see fmclf.train.graphs); None: whenever the device is CUDA
    #: and the parts allow it. A run records what it did.
    cuda_graphs: bool | None = setting(
        None, "CUDA: replay the training as CUDA graphs, a whole epoch at a time where the data set allows it "
              "(same math, a fraction of the launch overhead; needs an updater that declares capturable = True). "
              "On for CUDA whenever the run's parts allow it, with a note when they do not. "
              "[default: on where they work]", _graphs)
    #: CPU threads for torch's operations; None: chosen by the run (fmclf.run.threads), which records its choice
    threads: int | None = setting(
        None, "CPU threads for torch's operations, chosen from the model and the machine when not given: 1 for a "
              "small model, else one per CPU. The count used is recorded in config.toml. [default: chosen]",
        _whole_or_none(1, MAX_THREADS, "More threads than cores only make them wait for each other; leave it out "
                                       "to let the run choose."))
    epochs: int = setting(10, "Passes over the training set.",
                          _counted(MAX_EPOCHS, "Train for one epoch or more.", "Train for fewer epochs."))
    batch_size: int = setting(256, "Examples per minibatch.",
                              _counted(MAX_BATCH, "The textbook uses {default}.", "A batch is at most the whole "
                                       "training set; give a smaller one.", " (2**31 - 1)"))
    lr: float = setting(0.1, "Learning rate.", _positive)
    seed: int | None = setting(None, "Seed for initial weights and shuffling; a CPU run with the same seed repeats "
                                     "exactly. [default: drawn and recorded]",
                               _whole_or_none(0, 2**63 - 1, "Any such number repeats a CPU run exactly.", "2**63-1"))
    #: component options by target: "dataset", "model", "loss", "updater", "visualizer.NAME", "metric.NAME", ...
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: option targets whose component was a Python object handed to ``fmclf.fit`` (``model``, ``loss`` ...):
    #: recorded by name only, so only Python, given the same objects, can rebuild the run
    from_python: list[str] = field(default_factory=list)

    def targets(self) -> dict[str, str]:
        """Option target -> component name, for every component of this run (see :mod:`fmclf.kinds`)."""
        return {row.target(name): name for row in ROWS
                for name in (getattr(self, row.setting) if row.many else [getattr(self, row.setting)])}

    def resumed_with(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings, as recorded by a run folder, continued with ``overrides`` (only :data:`RESUMABLE`
        ones): the one place that says what a resumed run may change. A visualizer dropped takes its options
        with it, and a swapped one is no longer a Python object."""
        fixed = {k for k, v in overrides.items() if k not in RESUMABLE and getattr(self, k) != v}
        if fixed:
            raise UsageError(f"a resumed run keeps the settings it started with; {', '.join(sorted(fixed))} cannot "
                             f"change (only {', '.join(RESUMABLE)} may).")
        # CUDA graphs change how a device runs the same math, and config.toml records what the run's device
        # did: on the machine that resumes it that is no request (a GPU run's true would refuse a CPU), so
        # the resumed session decides again unless told.
        out = replace(self, **{"cuda_graphs": None, **overrides})
        kept = {t: o for t, o in out.options.items()
                if not t.startswith("visualizer.") or t.split(".", 1)[1] in out.visualizers}
        return replace(out, options=kept, from_python=[t for t in out.from_python if t in out.targets()])

    def validate(self) -> None:
        """Reject impossible settings before any work starts."""
        def bad(what: str, fix: str) -> UsageError:
            return UsageError(f"{what}. {fix}")

        for f in fields(self):
            problem = f.metadata.get(CHECK) and f.metadata[CHECK](f.name, getattr(self, f.name), f.default)
            if problem:
                raise UsageError(problem)
        if not self.visualizers:
            raise bad("no visualizer is selected", f"Use {flag('visualizers', 'none')} to show nothing.")
        for row in ROWS:
            names = getattr(self, row.setting)
            if row.many and (not isinstance(names, (list, tuple)) or not all(isinstance(v, str) and v for v in names)):
                raise bad(f"{row.setting} must be a list of names, got {names!r}",
                          f"`fmclf plugins --kind {row.name}` lists them.")
        for name in (row.setting for row in ROWS if not row.many):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise bad(f"{name} must be a non-empty name, got {value!r}", "`fmclf plugins` lists the names.")
        if not isinstance(self.from_python, (list, tuple)) \
                or not all(isinstance(t, str) and t in self.targets() for t in self.from_python):
            raise ConfigError(
                f"from_python must list components of this run ({', '.join(self.targets())}), got "
                f"{self.from_python!r}. It records which came from Python objects; leave it as a run wrote it."
            )
        unknown = set(self.options) - set(self.targets())
        if unknown:
            adds = [f"{BY_NAME[t.split('.')[0]].flag} {t.split('.', 1)[1]}" for t in sorted(unknown)
                    if "." in t and t.split(".")[0] in BY_NAME]
            add = f"add the component ({', '.join(adds)})" if adds else "add the component"
            raise ConfigError(
                f"options are set for {', '.join(sorted(unknown))}, which this run does not use "
                f"(it uses: {', '.join(self.targets())}). Remove them or {add}."
            )

    def to_toml(self, provenance: dict[str, Any] | None = None, header: str = "") -> str:
        """The settings as TOML; ``provenance`` is recorded but ignored when read back."""
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}  # None is left out
        if not doc["from_python"]:  # a run of registered components only, as before from_python existed
            del doc["from_python"]
        options: dict[str, Any] = {}
        for target, values in self.options.items():
            node = options
            for part in target.split(".", 1):  # "visualizer.NAME": NAME may hold dots
                node = node.setdefault(part, {})
            for key, value in values.items():
                # TOML has no null: None is "none", what -o takes and the option parses back. Only a default can
                # fail to be written (an object): left out, it stays that same default when the file is read back.
                with contextlib.suppress(TypeError):
                    node[key] = _literal("none" if value is None else value)
        if options:
            doc["options"] = options
        if provenance:
            doc["provenance"] = provenance
        return header + dumps(doc)


#: The name most of fmclf knows the settings by (config.toml, ``--config``).
RunConfig = Settings

_HINTS = typing.get_type_hints(Settings)


def _held(name: str) -> type | None:
    """The one type setting ``name`` holds (``int`` for ``int | None``); None for a list or a table."""
    hint = _HINTS[name]
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint if hint in (str, int, float, bool) else None


def _own_settings() -> dict[str, tuple[type, str]]:
    out = {}
    for f in fields(Settings):
        if HELP in f.metadata:
            held = _held(f.name)
            if held is None:
                raise TypeError(f"Settings.{f.name}: a field made by setting() holds one str, int, float or bool")
            out[f.name] = (held, f.metadata[HELP])
    return out


#: The settings of their own (the fields made by :func:`setting`), in order, each with the type it holds and
#: its help: ``fmclf run`` makes a flag of each and ``fmclf.fit`` takes each as a keyword.
OWN_SETTINGS: dict[str, tuple[type, str]] = _own_settings()

_KEYS = {f.name for f in fields(RunConfig)} - {"options"}


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``, where nesting too deep for the parser (``a={b={c=...}}}``, ``[[[[...``) is a
    ``TOMLDecodeError`` like any other bad TOML, never a ``RecursionError``."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("values are nested too deeply (a run's settings nest two levels)") from None


def load_config(path: str | pathlib.Path, *, owned: bool = False) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a run file: ``(settings, options)``; settings hold only the keys present. ``owned``: it is a
    run folder's config.toml, opened as fmclf's own files are (no link, FIFO or device: exit 2)."""
    path = pathlib.Path(path)
    try:
        data = parse_toml(read_limited(path, CONFIG_LIMIT, owned=owned).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist. Pass the path of a TOML file, such as a "
                          f"run folder's config.toml.") from None
    except TooLarge:
        raise ConfigError(f"config file {str(path)!r} is larger than {CONFIG_LIMIT // 2**20} MiB, and a run's "
                          f"settings take a few hundred bytes: it is not a config file. Pass the path of a TOML "
                          f"file, such as a run folder's config.toml.") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a folder. Pass the path of a TOML file, such as "
                          f"{str(path / CONFIG)!r}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}), so it is not a TOML "
                          f"file. Pass the path of one, such as a run folder's config.toml.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}. Fix the line it names.") from None
    data.pop("provenance", None)  # what produced a recorded run; not a setting
    _check_types(data, path)
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


#: The most a config file may hold (a run's settings take a few hundred bytes): a run folder's limit.
CONFIG_LIMIT: int = FILES[CONFIG].limit or 0

#: What each setting of a config file must be, from its field's type (lists are checked apart, options by their
#: components).
_TYPES = {f.name: held for f in fields(Settings) if (held := _held(f.name))}
#: How a value of each type a setting holds is told (numbers as :mod:`fmclf.numbers` counts them), and named.
_ACCEPTS: dict[type, tuple[Callable[[Any], bool], str]] = {
    str: (lambda v: isinstance(v, str), "a name (a string)"),
    int: (is_whole, "a whole number"),
    float: (is_number, "a number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
}


def _check_types(data: dict[str, Any], path: pathlib.Path) -> None:
    """Refuse a setting of the wrong type, naming the file (a damaged or edited config.toml)."""
    for key, held in _TYPES.items():
        value = data.get(key)
        accepts, kind = _ACCEPTS[held]
        if key in data and not accepts(value):
            raise ConfigError(f"config file {str(path)!r}: {key} must be {kind}, got {value!r}. Fix or remove "
                              f"that line.")


def _literal(value: Any) -> Any:
    """``value`` as tomli_w takes it (a path as its text); TypeError for what TOML cannot hold (None, an object)."""
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_literal(v) for v in value]
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot write {value!r} to TOML")


def _table(doc: Mapping[str, Any]) -> dict[str, Any]:
    # TOML has no null: a None is left out, so reading the file back leaves it unset.
    return {k: _table(v) if isinstance(v, Mapping) else _literal(v) for k, v in doc.items() if v is not None}


def dumps(doc: Mapping[str, Any]) -> str:
    """Write a dict of scalars, lists and nested dicts (tables) as TOML, None values left out."""
    return tomli_w.dumps(_table(doc))


def toml_key(key: str) -> str:
    """``key`` as TOML writes it: bare, or quoted where it must be."""
    return tomli_w.dumps({key: 0})[:-len(" = 0\n")]


def toml_inline(value: Any) -> str:
    """``value`` as TOML on one line, as the dry run shows it (tomli_w spreads a list over lines)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_inline, value)) + "]"
    return tomli_w.dumps({"v": _literal(value)})[len("v = "):-1]


def merge(config: RunConfig, explicit: set[str], settings: dict[str, Any],
          options: dict[str, dict[str, Any]]) -> RunConfig:
    """Lay a config file (``settings``, ``options`` from :func:`load_config`) under ``config``, whose fields named in
    ``explicit`` came from the command line and win. The file's options for a component go only to that same
    component: when the command line picks another model, the file's model options are dropped rather than handed to a
    model that never declared them."""
    lists = {row.setting: list(getattr(config, row.setting)) for row in ROWS if row.many}
    merged = replace(config, **{**lists, **{k: v for k, v in settings.items() if k not in explicit}})
    from_file = replace(RunConfig(), **{k: v for k, v in settings.items() if k in _KEYS})
    file_targets, targets = from_file.targets(), merged.targets()
    options = {t: dict(v) for t, v in options.items() if t not in file_targets or targets.get(t) == file_targets[t]}
    for target, values in config.options.items():
        options.setdefault(target, {}).update(values)
    # A component the command line replaced is no longer the file's Python object.
    return replace(merged, options=options, from_python=[
        t for t in merged.from_python if t in file_targets and targets.get(t) == file_targets[t]])
