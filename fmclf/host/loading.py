"""Finding, loading and isolating plugins.

Built-ins and third-party packages load the same way: one entry point of the ``fmclf`` group at a time, each import
and each hook call guarded, so that a broken plugin gives a warning naming it instead of taking down the command.
``FMCLF_STRICT_PLUGINS=1`` makes those warnings an error; ``FMCLF_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the
built-ins (plus ``-p NAME``), like pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.

pluggy's ``PluginManager`` keeps the hook implementations, their order and its own validation; ``-p no:NAME`` is
``pm.set_blocked``. Three things stay here, because pluggy does them in a way that loses that isolation:

- Hooks are called one implementation at a time, not as ``pm.hook.register_models(register=...)``: pluggy's call
  loop stops at the first implementation that raises, and the exception would not say whose it is. Its per-plugin
  proxy, ``pm.subset_hook_caller``, filters plugins with ``hasattr(plugin, hook_name)`` into a set, so it calls a
  ``specname`` implementation once per other plugin, fails on an unhashable plugin (a ``SimpleNamespace``) and is
  quadratic. Each call gets a ``register`` that knows its plugin, so a bad registration names it.
- Entry points are found and imported here, not by ``pm.load_setuptools_entrypoints``, which imports them
  unguarded, cannot load only some (autoload off, ``-p``), skips a second distribution's entry point of the same
  name without a word, and cannot time an import or see it pull in torch.
- Hook implementations are checked before ``pm.register``, in words that name the plugin and the fix. pluggy
  finds a misspelled hook only in ``check_pending`` (first offender, for the whole manager), never a keyword-only
  ``register``, and a ``PluginValidationError`` leaves the plugin half-registered. Its own check still runs after
  ours, as a backstop.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from .. import hookspecs
from ..errors import PluginError, Stopped
from ..kinds import BY_NAME, ROWS
from ..signals import handled
from .options import lookalike_options
from .registry import (
    IN_SENTENCE,
    ComponentRecord,
    PluginInfo,
    Registry,
    check_name,
    did_you_mean,
    first_doc_line,
    normalize,
)

HOOKS = [k.hook for k in ROWS]

ENTRY_POINT_GROUP = "fmclf"
BUILTIN_DIST = "fmclf"


def env_flag(name: str) -> bool:
    """True when environment variable ``name`` is set to a true-ish value."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class PluginFailure:
    """A plugin that could not be used, and why."""

    plugin: PluginInfo
    stage: str  #: "import", "registration", "hook register_models", ...
    error: str

    def message(self, *, strict: bool = False) -> str:
        """One paragraph for the user (``strict``: it is about to stop the command)."""
        lost = ("the components that hook registers are not available" if self.stage.startswith("hook ")
                else "none of its components are available")
        source = f"{self.plugin.describe()}, " if self.plugin.dist else ""
        return (
            f"plugin {self.plugin.name!r} ({source}module {self.plugin.module}) failed at {self.stage}: "
            f"{self.error.rstrip('.')}. " + ("" if strict else f"So {lost}; everything else works. ")
            + f"Fix or uninstall it, or block it with `fmclf -p no:{self.plugin.name} ...`"
            + ("." if strict else "; FMCLF_STRICT_PLUGINS=1 makes this an error.")
        )


@dataclass
class LoadedPlugin:
    """A plugin that loaded, with what loading it cost."""

    info: PluginInfo
    seconds: float
    imported_torch: bool  #: it imported torch at import time (slows every command)


@dataclass
class PluginHost:
    """The result of one plugin load: the plugins, their failures, their components."""

    pm: pluggy.PluginManager
    plugins: list[LoadedPlugin] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    registry: Registry = field(default_factory=Registry)
    #: plugins kept out by ``-p no:NAME``, with how to load them (only to name them when a lookup misses)
    blocked: list[tuple[PluginInfo, Callable[[], object], str]] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """Messages the CLI prints to stderr."""
        return [f.message() for f in self.failures] + self.notes


def _entry_points() -> list[tuple[metadata.EntryPoint, PluginInfo]]:
    """Every ``fmclf`` entry point once, built-ins first, then by name."""
    found: dict[tuple[str, str, str], tuple[metadata.EntryPoint, PluginInfo]] = {}
    # Each distribution's name and version, by the id of the object its entry points share: parsing its METADATA
    # is most of what finding the plugins costs, and fmclf itself declares seven.
    dists: dict[int, tuple[str | None, str | None]] = {}
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))  # alive till the end: ids stay unique
    for ep in eps:
        dist = getattr(ep, "dist", None)
        if dist is not None and id(dist) not in dists:
            meta = dist.metadata
            dists[id(dist)] = (meta["Name"], meta["Version"])
        name, version = dists.get(id(dist), (None, None))  # None's id is no live distribution's
        info = PluginInfo(ep.name, ep.value, name, version, builtin=normalize(name) == BUILTIN_DIST)
        found.setdefault((normalize(name), ep.name, ep.value), (ep, info))  # the first, if a dist is on sys.path twice
    return sorted(found.values(), key=lambda pair: (not pair[1].builtin, pair[1].name))


def _matches(info: PluginInfo, names: Iterable[str]) -> bool:
    wanted = {normalize(n) for n in names}
    return normalize(info.name) in wanted or (info.dist is not None and normalize(info.dist) in wanted)


#: ``(name, plugin_object)`` pairs that every load in this process adds after the installed plugins. The
#: ``fmclf_plugin`` test fixture puts a plugin here for one test, so that ``fmclf.get_component`` and the CLI
#: (run in-process) both see it.
process_plugins: list[tuple[str, object]] = []


def split_specs(specs: Iterable[str]) -> tuple[list[str], list[str]]:
    """``-p`` specs as a user gives them (NAME loads a plugin, ``no:NAME`` blocks one): the names to include and
    the names to block, as :func:`load_plugins` takes them."""
    specs = list(specs)
    return [s for s in specs if not s.startswith("no:")], [s[3:] for s in specs if s.startswith("no:")]


# Under fmclf's handler a real Ctrl-C raises Stopped, which stops the load; a plugin that
# raises KeyboardInterrupt itself (as some do on a failed prompt) is that plugin's failure.
@handled()
def load_plugins(
    *,
    autoload: bool | None = None,
    include: Iterable[str] = (),
    block: Iterable[str] = (),
    strict: bool | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> PluginHost:
    """Load plugins and collect their components.

    ``autoload`` (default: not ``$FMCLF_DISABLE_PLUGIN_AUTOLOAD``) loads every installed entry point; otherwise only
    the built-ins and those named in ``include`` (entry-point name, distribution name, or an importable module path).
    ``block`` names plugins never to load. ``extra`` registers ``(name, plugin_object)`` pairs directly (after
    :data:`process_plugins`). ``strict`` (default ``$FMCLF_STRICT_PLUGINS``) raises :class:`PluginError` instead of
    warning when a plugin fails.
    """
    if autoload is None:
        autoload = not env_flag("FMCLF_DISABLE_PLUGIN_AUTOLOAD")
    if strict is None:
        strict = env_flag("FMCLF_STRICT_PLUGINS")
    include, block, extra = list(include), list(block), list(extra)  # each is read more than once
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    infos: dict[str, PluginInfo] = {}

    found = _entry_points()
    known = sorted({i.name for _, i in found} | {i.dist for _, i in found if i.dist})
    for wanted in block:
        pm.set_blocked(wanted)
        in_process = any(n == wanted for n, _ in [*process_plugins, *extra])
        if not in_process and not any(_matches(info, [wanted]) for _, info in found):
            host.notes.append(f"`-p no:{wanted}` blocks nothing: no installed plugin is named "
                              f"{wanted!r}.{did_you_mean(wanted, known)}")
    for ep, info in found:
        if _matches(info, block):
            host.blocked.append((info, ep.load, next(w for w in block if _matches(info, [w]))))
        elif info.builtin or autoload or _matches(info, include):
            _add(host, infos, info, ep.load)

    for wanted in include:
        if any(_matches(info, [wanted]) for _, info in found):
            continue
        # Not an entry point: an importable module, like pytest's `-p module`.
        info = PluginInfo(wanted, wanted)
        try:
            spec = importlib.util.find_spec(wanted)
        except Exception:  # noqa: BLE001 - a parent package that is missing or broken
            spec = None
        if spec is None:
            host.failures.append(PluginFailure(
                info, "loading",
                f"no installed plugin or importable module is named {wanted!r}.{did_you_mean(wanted, known)} "
                f"Installed plugins: {', '.join(known) or 'none'}",
            ))
            continue
        # mypy infers no type for a lambda with a default argument (the default binds this loop's name)
        _add(host, infos, info, lambda w=wanted: importlib.import_module(w))  # type: ignore[misc]

    for name, obj in [*process_plugins, *extra]:
        _add(host, infos, PluginInfo(name, getattr(obj, "__name__", type(obj).__name__)),
             lambda o=obj: o)  # type: ignore[misc]  # as above

    _collect(host, infos)
    host.registry.blocked_owner = lambda kind, name: _blocked_owner(host, kind, name)
    if strict and host.failures:
        raise PluginError(
            "strict plugin loading is on (FMCLF_STRICT_PLUGINS=1) and plugins failed:\n"
            + "\n".join(f"- {f.message(strict=True)}" for f in host.failures)
        )
    return host


def _who(info: PluginInfo) -> str:
    return f"plugin {info.name!r}" + (f" ({info.describe()})" if info.dist else "")


def _add(host: PluginHost, infos: dict[str, PluginInfo], info: PluginInfo, load: Callable[[], object]) -> None:
    """Import one plugin and register it with pluggy, recording any failure."""
    pm = host.pm
    # Two distributions may use the same entry-point name; pluggy needs unique ones.
    name = info.name if pm.get_plugin(info.name) is None else f"{info.dist or info.module}:{info.name}"
    if pm.is_blocked(name):  # `-p no:NAME`: never imported, as in pluggy's own entry-point loader
        host.blocked.append((info, load, name))
        return
    had_torch = "torch" in sys.modules
    start = time.perf_counter()
    try:
        obj = load()
    except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
        if isinstance(exc, Stopped):  # a real signal (see load_plugins), not the plugin's own raise
            raise
        host.failures.append(PluginFailure(info, "import", f"{type(exc).__name__}: {exc}"))
        return
    seconds = time.perf_counter() - start
    if problems := _check_hookimpls(pm, obj):
        host.failures.append(PluginFailure(info, "registration", "; ".join(problems)))
        return
    try:
        pm.register(obj, name=name)
    except pluggy.PluginValidationError as exc:  # what _check_hookimpls did not foresee
        pm.unregister(name=name)  # pluggy keeps the implementations it added before the one it refused
        host.failures.append(PluginFailure(info, "registration", " ".join(str(exc).split())))
        return
    except ValueError as exc:  # the same object (or name) registered twice
        host.notes.append(f"{_who(info)} was not loaded again: {exc}")
        return
    if unmarked := [h for h in HOOKS if callable(getattr(obj, h, None)) and pm.parse_hookimpl_opts(obj, h) is None]:
        host.notes.append(f"{_who(info)} defines {', '.join(unmarked)} without @fmclf.hookimpl, so fmclf does not "
                          f"call it; add the decorator.")
    infos[name] = info
    host.plugins.append(LoadedPlugin(info, seconds, imported_torch=not had_torch and "torch" in sys.modules))


def _check_hookimpls(pm: pluggy.PluginManager, obj: object) -> list[str]:
    """What is wrong with a plugin's hook implementations, in words (empty when nothing is). As to pluggy, an
    ``optionalhook`` of a hook this fmclf lacks (a newer one's, say) is no error, and is never called."""
    problems = []
    for attr in dir(obj):
        opts = None if attr.startswith("_") else pm.parse_hookimpl_opts(obj, attr)
        if opts is None:
            continue
        hook = opts.get("specname") or attr
        if hook not in HOOKS:
            if opts.get("optionalhook"):
                continue
            problems.append(f"hook implementation {hook!r} names no fmclf hook"
                            f"{did_you_mean(hook, HOOKS, form=IN_SENTENCE)}; the hooks are: {', '.join(HOOKS)}")
            continue
        if opts.get("hookwrapper") or opts.get("wrapper"):
            problems.append(f"{attr} is marked as a wrapper; fmclf hooks are plain functions that call register(...)")
            continue
        try:
            signature = inspect.signature(getattr(obj, attr))
        except (TypeError, ValueError):
            continue  # pluggy checks what we cannot
        passed = getattr(pm.hook, hook).spec.argnames  # what the hook passes: ("register",)
        params = list(signature.parameters.values())
        unknown = [p.name for p in params if p.name not in passed and p.default is p.empty
                   and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        by_keyword = [p.name for p in params if p.name in passed and p.kind is p.KEYWORD_ONLY]
        if unknown:
            hint = did_you_mean(unknown[0], passed, form=IN_SENTENCE)
            why = (f"it asks for {', '.join(map(repr, unknown))}{hint}, and the hook passes only "
                   f"{', '.join(map(repr, passed))}")
        elif by_keyword:
            why = f"{' and '.join(map(repr, by_keyword))} is keyword-only, but the hook passes it by position"
        else:
            continue
        problems.append(f"hook implementation {attr}{signature} does not match the hook {hook}({', '.join(passed)}): "
                        f"{why}")
    return problems


#: The keywords ``register`` takes after the name and the factory.
REGISTER_KEYWORDS = ("help",)


def _registrar(kind: str, info: PluginInfo, out: list[ComponentRecord]) -> Callable[..., None]:
    """The ``register`` one plugin's hook is called with: a bad registration raises, failing that hook."""

    def register(name: str, factory: Callable, *, help: str | None = None, **unknown: object) -> None:
        if unknown:
            words = [f"{key!r}{did_you_mean(key, REGISTER_KEYWORDS, form=IN_SENTENCE, cutoff=0.5)}" for key in unknown]
            lead = "an unexpected keyword argument " if len(words) == 1 else "unexpected keyword arguments "
            raise TypeError(f"register() got {lead}{', '.join(words)} for {kind} {name!r}; it takes "
                            f"register(name, factory, *, {', '.join(f'{k}=...' for k in REGISTER_KEYWORDS)})")
        if why := check_name(name):
            raise ValueError(why)
        if isinstance(factory, types.ModuleType):
            raise TypeError(f"the factory for {kind} {name!r} is the module {factory.__name__}: a submodule named like "
                            f"the factory function replaced it on the package once imported; rename the submodule")
        if not callable(factory):
            raise TypeError(f"the factory for {kind} {name!r} is not callable: {factory!r}")
        if any(r.name == name for r in out):
            raise ValueError(f"{kind} {name!r} is registered twice")
        out.append(ComponentRecord(kind, name, factory, help or first_doc_line(factory), info))

    return register


def _collect(host: PluginHost, infos: dict[str, PluginInfo]) -> None:
    """Call each hook implementation on its own, so a raising hook costs only its plugin (the module says why)."""
    for row in ROWS:
        # Registration order, built-ins first: it decides the order rivals are listed in a collision.
        for impl in getattr(host.pm.hook, row.hook).get_hookimpls():
            info = infos[impl.plugin_name]
            records: list[ComponentRecord] = []
            kwargs = {"register": _registrar(row.name, info, records)}
            try:
                impl.function(*(kwargs[a] for a in impl.argnames))
            except BaseException as exc:  # noqa: BLE001 - isolate any plugin fault
                if isinstance(exc, Stopped):
                    raise
                host.failures.append(PluginFailure(info, f"hook {row.hook}", f"{type(exc).__name__}: {exc}"))
                continue
            for record in records:
                try:
                    host.registry.add(record)
                except ValueError as exc:  # two in-process plugins alike in name and module: the later one's fault
                    host.failures.append(PluginFailure(info, f"hook {row.hook}", str(exc)))
                else:
                    host.notes.extend(_lookalike_notes(record))
    for builtin, others in host.registry.shadowed():
        for other in others:
            host.notes.append(
                f"{_who(other.plugin)} registers {builtin.kind} {builtin.name!r}, the name of a built-in; the plain "
                f"name {builtin.name!r} stays the built-in's, so commands and run folders keep their meaning. "
                f"Select the plugin's with `--{other.kind} {host.registry.select_as(other)}`."
            )


def _blocked_owner(host: PluginHost, kind: str, name: str) -> tuple[PluginInfo, str] | None:
    """The blocked plugin that would register ``name`` as a ``kind``, if one does, and the name it was blocked by.
    Only asked when a name is missing, so a blocked plugin is imported (guarded, as any load) only to say so."""
    for info, load, flag in host.blocked:
        try:
            impl = getattr(load(), BY_NAME[kind].hook, None)
            records: list[ComponentRecord] = []
            if callable(impl):
                getattr(impl, "__wrapped__", impl)(_registrar(kind, info, records))
        except Exception:  # noqa: BLE001 - it is blocked; its faults are not this lookup's
            continue
        if any(r.name == name for r in records):
            return info, flag
    return None


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _lookalike_notes(record: ComponentRecord) -> list[str]:
    """A note for each option of ``record`` named like something fmclf passes to another kind."""
    row = BY_NAME[record.kind]
    gets = ", ".join(row.core) or "nothing"
    notes = []
    for param, owners in lookalike_options(record).items():
        passed = f"passes only to {' and '.join(map(_a, owners))}" if owners else "passes to no factory"
        notes.append(
            f"{_who(record.plugin)}: {record.kind} {record.name!r} asks for {param!r}, which fmclf {passed}; "
            f"{_a(record.kind)} gets {gets}. So {param!r} is an option of {record.name!r} "
            f"(`-o {row.target(record.name)}.{param}=VALUE`), never the run's {param}: rename it, "
            f"or build what it needs from what {_a(record.kind)} gets."
        )
    return notes


_current: PluginHost | None = None


def get_host() -> PluginHost:
    """The plugins of this process, loaded on first use with the environment's settings."""
    global _current
    if _current is None:
        _current = load_plugins()
    return _current


def set_host(host: PluginHost | None) -> None:
    """Make ``host`` the current plugin load (the CLI does this after reading its flags)."""
    global _current
    _current = host
