"""Component records and the name lookup over them (collisions: docs/plugins.md, "Collisions").

A collided name must be qualified as ``dist:name`` (or ``plugin:name``), except that a plugin registering a
built-in's name does not make it ambiguous: the plain name stays the built-in's, the plugin's is selected qualified.
"""

from __future__ import annotations

import builtins
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..errors import AmbiguousComponentError, UnknownComponentError
from ..kinds import KINDS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from."""

    name: str  #: entry-point name (or the name given to ``register``)
    module: str  #: import path of the plugin object
    dist: str | None = None  #: distribution that declared the entry point
    version: str | None = None  #: that distribution's version
    builtin: bool = False  #: shipped with fmclf itself

    def describe(self) -> str:
        """``dist version`` when known, else the plugin name."""
        if self.dist:
            return f"{self.dist} {self.version}" if self.version else self.dist
        return f"plugin {self.name!r}"


@dataclass(frozen=True)
class ComponentRecord:
    """One registered component."""

    kind: str
    name: str
    factory: Callable
    help: str
    plugin: PluginInfo

    @property
    def qualified_name(self) -> str:
        """``dist:name``: unique even when two plugins use the same name."""
        return f"{self.plugin.dist or self.plugin.name}:{self.name}"

    def describe(self) -> str:
        """``model 'mlp' (fmclf-example 0.1.0)``, for messages."""
        return f"{self.kind} {self.name!r} ({self.plugin.describe()})"


def normalize(name: str | None) -> str:
    """A distribution or plugin name compared the way pip compares them (case-insensitive, ``_`` and ``.`` as ``-``)."""
    return re.sub(r"[-_.]+", "-", name or "").lower()


def check_name(name: object) -> str | None:
    """Return why ``name`` is not a valid component name, or None."""
    if isinstance(name, str) and _NAME.match(name):
        return None
    return (f"component names are non-empty strings of letters, digits, '.', '_' and '-', starting with a letter or "
            f"digit; got {name!r}")


def first_doc_line(obj: object) -> str:
    """First non-empty line of ``obj``'s docstring, or ''."""
    return next(iter((getattr(obj, "__doc__", None) or "").strip().splitlines()), "").strip()


#: did_you_mean's form inside a sentence: "'on_epoch_ends' (did you mean 'on_epoch_end'?) is no event"
IN_SENTENCE = " (did you mean {!r}?)"


def did_you_mean(word: str, names: Iterable[str], *, form: str = " Did you mean {!r}?", cutoff: float = 0.6) -> str:
    """``form`` holding the one of ``names`` closest to ``word``, or '' when none is close: by default a sentence
    of its own, :data:`IN_SENTENCE` inside one."""
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=cutoff)
    return form.format(close[0]) if close else ""


class Registry:
    """All components of one plugin load, looked up by kind and name."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, list[ComponentRecord]]] = {k: {} for k in KINDS}
        #: Says why a name is missing when a plugin the user blocked would register it (set by the loader).
        self.blocked_owner: Callable[[str, str], tuple[PluginInfo, str] | None] = lambda kind, name: None

    def add(self, record: ComponentRecord) -> None:
        """Add a record; a second plugin using the same name makes it ambiguous."""
        same = self._records[record.kind].setdefault(record.name, [])
        if any(r.plugin == record.plugin for r in same):
            raise ValueError(f"{record.kind} {record.name!r} is registered twice by the same plugin")
        same.append(record)

    def __iter__(self) -> Iterator[ComponentRecord]:
        for kind in KINDS:
            for name in sorted(self._records[kind]):
                yield from self._records[kind][name]

    def list(self, kind: str | None = None, filter: str | None = None) -> list[ComponentRecord]:
        """Records of one kind (or all), optionally only names containing ``filter``."""
        return [r for r in self
                if (kind is None or r.kind == kind) and (not filter or filter.lower() in r.name.lower())]

    def names(self, kind: str) -> builtins.list[str]:
        """The names a user can type for ``kind`` (qualified where ambiguous)."""
        return [self.select_as(r) for r in self.list(kind)]

    def select_as(self, record: ComponentRecord) -> str:
        """What selects ``record``: its plain name, or a qualified one when that is ambiguous."""
        rivals = self._records[record.kind].get(record.name, [])
        if len(rivals) <= 1 or self._builtin_of(rivals) is record:
            return record.name
        return self._choice(record, rivals)

    def qualified(self, record: ComponentRecord) -> str:
        """The qualified name that selects ``record`` whatever else gets installed later (what a run folder's
        config.toml records): ``dist:name``, or ``plugin:name`` where that is not enough."""
        rivals = self._records[record.kind].get(record.name, [])
        return self._choice(record, rivals if record in rivals else [*rivals, record])

    def shadowed(self) -> builtins.list[tuple[ComponentRecord, builtins.list[ComponentRecord]]]:
        """Each built-in whose plain name another plugin registers too, with those others."""
        out = []
        for kind in KINDS:
            for recs in self._records[kind].values():
                builtin = self._builtin_of(recs)
                if builtin is not None and len(recs) > 1:
                    out.append((builtin, [r for r in recs if r is not builtin]))
        return out

    @staticmethod
    def _builtin_of(records: builtins.list[ComponentRecord]) -> ComponentRecord | None:
        """The one built-in among ``records``, which keeps the plain name (see :meth:`get`), or None."""
        builtins = [r for r in records if r.plugin.builtin]
        return builtins[0] if len(builtins) == 1 else None

    def get(self, kind: str, name: str) -> ComponentRecord:
        """Look up ``name`` (or ``dist:name``); raise a helpful error when absent or ambiguous."""
        if kind not in self._records:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        owner, _, bare = name.rpartition(":")
        recs = self._records[kind].get(bare, [])
        if owner:
            mine = [r for r in recs if normalize(owner) in (normalize(r.plugin.dist), normalize(r.plugin.name))]
            if not mine and recs:
                raise UnknownComponentError(
                    f"no plugin named {owner!r} registers {kind} {bare!r}; it comes from "
                    f"{' and '.join(r.plugin.describe() for r in recs)}: use "
                    f"{' or '.join(repr(self._choice(r, recs)) for r in recs)}."
                )
            recs = mine
        if len(recs) == 1:
            return recs[0]
        if len(recs) > 1 and not owner and (builtin := self._builtin_of(recs)) is not None:
            # A plugin that registers a built-in's name does not take it over: plain `scratch` stays the
            # textbook's, so commands and run folders keep their meaning; the plugin's is `DIST:scratch`.
            return builtin
        if len(recs) > 1:
            owners = " and ".join(r.plugin.describe() for r in recs)
            choices = ", ".join(repr(self._choice(r, recs)) for r in recs)
            raise AmbiguousComponentError(
                f"{kind} {bare!r} is registered by more than one plugin ({owners}), so the plain name is ambiguous. "
                f"Say which one with a qualified name: {choices} (for example `--{kind} {self._choice(recs[0], recs)}`)"
                f"; or block the plugin you do not want with `fmclf -p no:PLUGIN`."
            )
        available = self.names(kind)
        if (blocked := self.blocked_owner(kind, bare)) is not None:
            info, flag = blocked
            raise UnknownComponentError(
                f"{kind} {bare!r} comes from plugin {info.name!r} ({info.describe()}), which `-p no:{flag}` blocks, "
                f"so it is not available. Drop that flag to use it, or choose another {kind}: "
                f"{', '.join(available) or 'none'}."
            )
        hint = did_you_mean(name, available, form=" — did you mean {!r}?") or " —"
        listing = ", ".join(available) or "none (no plugin registers one)"
        raise UnknownComponentError(
            f"unknown {kind} {name!r}{hint} available: {listing}. "
            f"`fmclf plugins` lists every component and the plugin that provides it."
        )

    @staticmethod
    def _choice(record: ComponentRecord, rivals: builtins.list[ComponentRecord]) -> str:
        """The qualified name that picks ``record`` out of ``rivals``: ``dist:name``, or ``plugin:name`` when one
        distribution ships two plugins with that name."""
        mine = normalize(record.plugin.dist or record.plugin.name)
        same_dist = [r for r in rivals if normalize(r.plugin.dist or r.plugin.name) == mine]
        return record.qualified_name if len(same_dist) == 1 else f"{record.plugin.name}:{record.name}"
