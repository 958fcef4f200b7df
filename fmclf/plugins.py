"""Finding, loading and isolating plugins.

Built-ins and third-party packages are loaded the same way: one entry point
of the ``fmclf`` group at a time, each import and each hook call guarded, so
that one broken plugin produces a warning naming it instead of taking down
the command. ``FMCLF_STRICT_PLUGINS=1`` turns those warnings into an error;
``FMCLF_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the built-ins (plus what
``-p NAME`` asks for), like pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import HOOKS, KINDS, ComponentRecord, PluginInfo, Registry, check_name, first_doc_line

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

    def message(self) -> str:
        """One paragraph for the user."""
        return (
            f"plugin {self.plugin.name!r} ({self.plugin.describe()}, module {self.plugin.module}) "
            f"failed at {self.stage}: {self.error}. Its components are not available; everything "
            f"else works. Fix or uninstall it, block it with `-p no:{self.plugin.name}`, or set "
            f"FMCLF_STRICT_PLUGINS=1 to make this an error."
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

    def warnings(self) -> list[str]:
        """Messages the CLI prints to stderr."""
        return [f.message() for f in self.failures] + self.notes


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _norm(name: str | None) -> str:
    return (name or "").lower().replace("_", "-")


def _entry_points() -> list[tuple[metadata.EntryPoint, PluginInfo]]:
    """Every ``fmclf`` entry point once, built-ins first, then by name."""
    seen, out = set(), []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist, version = _dist_of(ep)
        key = (_norm(dist), ep.name, ep.value)
        if key in seen:  # the same distribution on sys.path twice
            continue
        seen.add(key)
        info = PluginInfo(ep.name, ep.value, dist, version, builtin=_norm(dist) == BUILTIN_DIST)
        out.append((ep, info))
    out.sort(key=lambda pair: (not pair[1].builtin, pair[1].name))
    return out


def _matches(info: PluginInfo, names: Iterable[str]) -> bool:
    wanted = {_norm(n) for n in names}
    return _norm(info.name) in wanted or (info.dist is not None and _norm(info.dist) in wanted)


def load_plugins(
    *,
    autoload: bool | None = None,
    include: Iterable[str] = (),
    block: Iterable[str] = (),
    strict: bool | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> PluginHost:
    """Load plugins and collect their components.

    ``autoload`` (default: not ``$FMCLF_DISABLE_PLUGIN_AUTOLOAD``) loads every
    installed entry point; otherwise only the built-ins and those named in
    ``include`` (entry-point name, distribution name, or an importable module
    path). ``block`` names plugins never to load. ``extra`` registers
    ``(name, plugin_object)`` pairs directly, as the test fixture does.
    ``strict`` (default ``$FMCLF_STRICT_PLUGINS``) raises :class:`PluginError`
    instead of warning when a plugin fails.
    """
    if autoload is None:
        autoload = not env_flag("FMCLF_DISABLE_PLUGIN_AUTOLOAD")
    if strict is None:
        strict = env_flag("FMCLF_STRICT_PLUGINS")
    include, block = list(include), list(block)
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    infos: dict[str, PluginInfo] = {}

    found = _entry_points()
    for ep, info in found:
        if _matches(info, block):
            continue
        if not (info.builtin or autoload or _matches(info, include)):
            continue
        _add(host, infos, info, ep.load)

    for wanted in include:
        if any(_matches(info, [wanted]) for _, info in found) or _matches_any(infos, wanted):
            continue
        # Not an entry point: an importable module, like pytest's `-p module`.
        info = PluginInfo(wanted, wanted)
        if importlib.util.find_spec(wanted.split(".")[0]) is None:
            names = sorted({i.name for _, i in found})
            close = difflib.get_close_matches(wanted, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            host.failures.append(
                PluginFailure(info, "loading", f"no installed plugin or importable module is named {wanted!r}.{hint} Installed plugins: {', '.join(names) or 'none'}")
            )
            continue
        _add(host, infos, info, lambda w=wanted: importlib.import_module(w))

    for name, obj in extra:
        _add(host, infos, PluginInfo(name, getattr(obj, "__name__", type(obj).__name__)), lambda o=obj: o)

    _collect(host, infos)
    if strict and host.failures:
        raise PluginError(
            "FMCLF_STRICT_PLUGINS is set and plugins failed:\n"
            + "\n".join(f"- {f.message()}" for f in host.failures)
        )
    return host


def _matches_any(infos: dict[str, PluginInfo], wanted: str) -> bool:
    return any(_matches(i, [wanted]) for i in infos.values())


def _add(host: PluginHost, infos: dict[str, PluginInfo], info: PluginInfo, load: Callable[[], object]) -> None:
    """Import one plugin and register it with pluggy, recording any failure."""
    had_torch = "torch" in sys.modules
    start = time.perf_counter()
    try:
        obj = load()
    except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
        if isinstance(exc, KeyboardInterrupt):
            raise
        host.failures.append(PluginFailure(info, "import", f"{type(exc).__name__}: {exc}"))
        return
    seconds = time.perf_counter() - start
    name = info.name if host.pm.get_plugin(info.name) is None else f"{info.dist}:{info.name}"
    try:
        host.pm.register(obj, name=name)
    except pluggy.PluginValidationError as exc:
        host.failures.append(PluginFailure(info, "registration", f"a hook implementation does not match its hook: {exc}"))
        return
    except ValueError as exc:  # the same object registered twice
        host.notes.append(f"plugin {info.name!r} ({info.describe()}) was not loaded again: {exc}")
        return
    problem = _misspelled_hooks(host.pm, obj)
    if problem:
        host.pm.unregister(obj)
        host.failures.append(PluginFailure(info, "registration", problem))
        return
    unmarked = [h for h in HOOKS.values() if callable(getattr(obj, h, None)) and host.pm.parse_hookimpl_opts(obj, h) is None]
    if unmarked:
        host.notes.append(
            f"plugin {info.name!r} ({info.describe()}) defines {', '.join(unmarked)} without "
            f"@fmclf.hookimpl, so fmclf does not call it; add the decorator."
        )
    infos[name] = info
    host.plugins.append(LoadedPlugin(info, seconds, imported_torch=not had_torch and "torch" in sys.modules))


def _misspelled_hooks(pm: pluggy.PluginManager, obj: object) -> str | None:
    """Hook implementations whose name is not a hook (pluggy's check_pending, per plugin)."""
    bad = []
    for attr in dir(obj):
        if attr.startswith("_") or pm.parse_hookimpl_opts(obj, attr) is None:
            continue
        if attr not in HOOKS.values():
            close = difflib.get_close_matches(attr, list(HOOKS.values()), n=1)
            bad.append(f"{attr!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if bad:
        return f"hook implementation {', '.join(bad)} names no fmclf hook; the hooks are: {', '.join(HOOKS.values())}"
    return None


def _collect(host: PluginHost, infos: dict[str, PluginInfo]) -> None:
    """Call each hook implementation on its own, so a raising hook only costs its plugin."""
    for kind in KINDS:
        hook_name = HOOKS[kind]
        caller = getattr(host.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy lists last-registered first
            info = infos[impl.plugin_name]
            records: list[ComponentRecord] = []

            def register(name: str, factory: Callable, *, help: str | None = None, _kind=kind, _info=info, _out=records, **extra) -> None:
                why = check_name(name)
                if why:
                    raise ValueError(why)
                if not callable(factory):
                    raise TypeError(f"the factory for {_kind} {name!r} is not callable: {factory!r}")
                if any(r.name == name for r in _out):
                    raise ValueError(f"{_kind} {name!r} is registered twice")
                _out.append(ComponentRecord(_kind, name, factory, help or first_doc_line(factory), _info, dict(extra)))

            try:
                impl.function(*[{"register": register}[a] for a in impl.argnames])
            except BaseException as exc:  # noqa: BLE001 - isolate any plugin fault
                if isinstance(exc, KeyboardInterrupt):
                    raise
                host.failures.append(PluginFailure(info, f"hook {hook_name}", f"{type(exc).__name__}: {exc}"))
                continue
            for record in records:
                host.registry.add(record)


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
