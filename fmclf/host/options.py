"""Component options: read from a factory's signature, parsed from text.

A factory's keyword parameters, minus the core parameters of its kind, are the component's options: their
annotations type them (the types supported are in docs/plugins.md, "Options"), their defaults default them, and
``name: help`` lines under ``Options:`` (or ``Args:``) in the factory's docstring document them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import pathlib
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import wording
from ..errors import OptionError
from ..kinds import BY_NAME, KINDS, core_params, lookalikes
from .ranges import Range, check_number
from .registry import ComponentRecord, did_you_mean

_SCALARS = {int: "int", float: "float", bool: "bool", str: "str", pathlib.Path: "path"}
_A_SCALAR = {int: "an integer", float: "a number", bool: "a boolean", str: "a string", pathlib.Path: "a path"}
#: The Python types of the values (from a config file, or Python) each option type takes.
_TAKES = {int: (int,), float: (int, float), bool: (bool,), str: (str,), pathlib.Path: (str, pathlib.PurePath)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


class Required:
    """Marker default of an option that has none."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = Required()


@dataclass(frozen=True)
class TypeSpec:
    """What values an option takes."""

    base: type = str
    nullable: bool = False
    choices: tuple = ()
    sequence: bool = False
    length: int | None = None  #: a fixed-length tuple (``tuple[float, float]``)
    as_tuple: bool = False  #: values are passed as a tuple, not a list
    bounds: Range | None = None  #: for numbers (each element of a list): ``Annotated[float, fmclf.Range(0, 1)]``
    allow_inf: bool = False  #: a float that may be inf (its default is): see :mod:`fmclf.host.ranges`

    def __str__(self) -> str:
        if self.choices:
            text = "one of " + "|".join(map(format_value, self.choices))
        else:
            text = _SCALARS.get(self.base, "str")
            if self.bounds is not None and self.base in (int, float):
                text = f"{text} {self.bounds}"
        if self.sequence:
            text = ",".join([text] * self.length) if self.length else f"comma-separated list of {text}"
        return f"{text} or none" if self.nullable else text


@dataclass(frozen=True)
class Option:
    """One option of one component."""

    name: str
    type: TypeSpec
    default: Any
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """``hidden (int, default 256)``."""
        default = "required" if self.required else f"default {format_value(self.default)}"
        return f"{self.name} ({self.type}, {default})"

    def parse(self, text: str) -> Any:
        """Parse a command-line string into this option's type."""
        return self.coerce(text)

    def coerce(self, value: Any) -> Any:
        """Check and convert a value from a config file or Python; a string is read as the command line's."""
        t, text = self.type, isinstance(value, str)
        if t.nullable and (value is None or (text and value.strip().lower() in _NONE)):
            return None
        if value is None:
            raise ValueError("none is not allowed")
        if not t.sequence:
            return self._scalar(value.strip() if text else value, text=text)
        if text:
            value = [p for p in (s.strip() for s in value.strip().strip("[]()").split(",")) if p]
        elif not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        values = [self._scalar(v, text=text) for v in value]
        if t.length is not None and len(values) != t.length:
            raise ValueError(f"expected {t.length} values, got {len(values)}")
        return tuple(values) if t.as_tuple else values

    def _scalar(self, value: Any, *, text: bool) -> Any:
        """One value; ``text``, as typed on the command line, is read into the option's type first."""
        t = self.type
        if text and t.base is bool:
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError(f"{value!r} is not a boolean (use true or false)")
            value = value.lower() in _TRUE
        elif text and t.base in (int, float):
            # base 0 reads 0x/0o/0b, but refuses a leading zero ("010"), which int() reads as ten
            prefixed = t.base is int and value.lower().startswith(("0x", "0o", "0b"))
            try:
                value = int(value, 0) if prefixed else t.base(value)
            except ValueError:
                raise ValueError(f"{value!r} is not {_A_SCALAR[t.base]}") from None
        if not _takes(t.base, value):
            raise ValueError(f"{value!r} is not {_A_SCALAR.get(t.base, 'a string')}")
        if t.base is float:
            value = float(value)
        elif t.base is pathlib.Path:
            value = pathlib.Path(_recordable(str(value), path=True)).expanduser()
        elif t.base is str:
            value = _recordable(value)
        if t.choices and value not in t.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(repr, t.choices))}")
        if t.base in (int, float) and not t.choices:
            check_number(value, t.bounds, is_float=t.base is float, allow_inf=t.allow_inf)
        return value


def _takes(base: Any, value: Any) -> bool:
    """Whether ``value`` is of the Python types an option of type ``base`` takes, as it is: a bool is no number here.
    (A function, not an inline isinstance, so that type checkers keep ``value`` as Any after it.)"""
    return isinstance(value, _TAKES.get(base, ())) and (base is bool or not isinstance(value, bool))


def _recordable(text: str, *, path: bool = False) -> str:
    """``text``, if a run's config.toml (UTF-8) can record it: an empty path (which would mean the current folder)
    and text holding bytes that are not UTF-8 (as a path may) are refused."""
    if path and not text.strip():
        raise ValueError("the path is empty (it would mean the current folder); give a file or folder name")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} holds bytes that are not UTF-8 text, which config.toml cannot record") from None
    return text


def format_value(value: Any) -> str:
    """A value as a user would type it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


_EVAL_NS = {
    "int": int, "float": float, "bool": bool, "str": str, "Path": pathlib.Path, "pathlib": pathlib,
    "Optional": typing.Optional, "Union": typing.Union, "Literal": typing.Literal, "list": list,
    # typing.List / typing.Tuple on purpose: what an old-style annotation names when evaluated
    "tuple": tuple, "List": typing.List, "Tuple": typing.Tuple, "Sequence": typing.Sequence,  # noqa: UP006
    "typing": typing, "None": None, "Annotated": typing.Annotated, "Range": Range,
}


def _annotation(factory: Callable, param: inspect.Parameter) -> Any:
    ann = param.annotation
    if not isinstance(ann, str):
        return ann
    # The module's own names first, then only ours (a factory's module must not need torch for this).
    for names in (dict(getattr(factory, "__globals__", {})), {}):
        try:  # eval: annotations are code the plugin ships, as its factory is
            return eval(ann, names, _EVAL_NS)  # noqa: S307
        except Exception:  # unreadable: typed from the default instead
            continue
    return inspect.Parameter.empty


def type_spec(annotation: Any, default: Any) -> TypeSpec:
    """Map an annotation (or, without one, the default's type) to a :class:`TypeSpec`. A default of None makes the
    option nullable whatever the annotation says (``hidden: int = None`` means ``int | None``)."""
    spec = _type_spec(annotation, default)
    inf = spec.base is float and isinstance(default, float) and math.isinf(default)  # then inf is a value
    return dataclasses.replace(spec, allow_inf=spec.allow_inf or inf, nullable=spec.nullable or default is None)


def _type_spec(annotation: Any, default: Any) -> TypeSpec:
    if annotation is inspect.Parameter.empty or annotation is Any:  # typed by its default, if it says anything
        return TypeSpec(str) if default is None or default is REQUIRED else type_spec(type(default), default)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # Annotated[X, fmclf.Range(...)]: X's spec, bounded
        spec = type_spec(args[0], default)
        bounds = next((m for m in reversed(args[1:]) if isinstance(m, Range)), None)  # the last, if several
        return spec if bounds is None else dataclasses.replace(spec, bounds=bounds)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return dataclasses.replace(type_spec(rest[0], default), nullable=True)
        return TypeSpec(str, type(None) in args)
    if origin is typing.Literal:
        base = type(args[0]) if args and all(type(a) is type(args[0]) for a in args) else str
        return TypeSpec(base if base in _SCALARS else str, choices=tuple(args))
    if origin in (list, tuple, collections.abc.Sequence):
        inner_args = [a for a in args if a is not Ellipsis]
        inner = type_spec(inner_args[0], REQUIRED) if inner_args else TypeSpec(str)
        fixed = origin is tuple and Ellipsis not in args and len(set(args)) == 1
        return TypeSpec(inner.base, choices=inner.choices, sequence=True, length=len(args) if fixed else None,
                        as_tuple=origin is tuple, bounds=inner.bounds, allow_inf=inner.allow_inf)
    if annotation in _SCALARS:
        return TypeSpec(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pathlib.PurePath):
        return TypeSpec(pathlib.Path)
    return TypeSpec(str)


_DOC_HEADER = re.compile(r"^\s*(Options|Args|Arguments|Parameters|Keyword Args)\s*:\s*$")
_DOC_ITEM = re.compile(r"^\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _doc_help(factory: Callable) -> dict[str, str]:
    """``name: help`` lines under an ``Options:``/``Args:`` header of the docstring."""
    out: dict[str, str] = {}
    inside = False
    for line in (inspect.getdoc(factory) or "").splitlines():
        if _DOC_HEADER.match(line):
            inside = True
        elif inside and line.strip() and not line[0].isspace():
            inside = False  # the next section ("Returns:") or prose
        elif inside and (m := _DOC_ITEM.match(line)):
            out[m.group(1)] = m.group(2).strip()
    return out


def accepted_core_params(record: ComponentRecord) -> set[str]:
    """The core parameters of its kind that this factory accepts."""
    params = _signature(record).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {n for n in core_params(record.kind) if takes_all or n in params}


def _signature(record: ComponentRecord) -> inspect.Signature:
    try:
        return inspect.signature(record.factory)
    except (TypeError, ValueError):  # some builtins have no signature
        return inspect.Signature()


def lookalike_options(record: ComponentRecord) -> dict[str, tuple[str, ...]]:
    """The options of ``record`` named like something fmclf passes to factories, but not to factories of its kind
    (an updater's ``model``, a loss's ``device``): almost surely a factory that expects a core parameter it will
    never get. Maps each to the kinds that do get it."""
    suspects = lookalikes(record.kind)
    return {p.name: suspects[p.name] for p in _signature(record).parameters.values()
            if p.name in suspects and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def options_of(record: ComponentRecord) -> list[Option]:
    """The options of a component, in signature order."""
    helps = _doc_help(record.factory)
    out = []
    for p in _signature(record).parameters.values():
        if p.name in core_params(record.kind) or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        out.append(Option(p.name, type_spec(_annotation(record.factory, p), default), default, helps.get(p.name, "")))
    return out


def resolve_options(record: ComponentRecord, given: dict[str, Any],
                    others: Iterable[ComponentRecord] = ()) -> dict[str, Any]:
    """Check ``given`` (strings from the command line, or config values) against the component's options; return
    every option's value, defaults filled in. ``others``, the other components of its kind, are named when one of
    them has an option this one lacks."""
    options = {o.name: o for o in options_of(record)}
    listing = ("Its options: " + "; ".join(o.describe() for o in options.values())) if options else \
        f"{record.kind.capitalize()} {record.name!r} itself has no options"
    out: dict[str, Any] = {}
    for raw_name, value in given.items():
        name = raw_name.replace("-", "_")
        option = options.get(name)
        if option is None:
            having = [r for r in others if r != record and any(o.name == name for o in options_of(r))]
            if having:
                setting = BY_NAME[record.kind].setting
                hint = (f" {name!r} is an option of {' and of '.join(r.describe() for r in having)}: choose "
                        f"{'it' if len(having) == 1 else 'one'} with "
                        f"{' or '.join(f'`{wording.flag(setting, r.name)}`' for r in having)}.")
            else:
                hint = did_you_mean(name, options)
                hint += f" No installed {record.kind} has an option {name!r}." if others else ""
            raise OptionError(f"{record.describe()} has no option {raw_name!r}.{hint} {listing}.")
        try:
            out[name] = option.coerce(value)  # a string is parsed, as from the command line
        except ValueError as exc:
            raise OptionError(f"bad value for option {name!r} of {record.describe()}: {exc}. It takes {option.type}. "
                              f"{listing}.") from None
    for option in options.values():
        if option.name not in out and option.required:
            raise OptionError(
                f"{record.describe()} needs option {option.name!r} ({option.type}); set it with "
                f"`{wording.option(BY_NAME[record.kind].target(record.name), option.name, 'VALUE')}`. {listing}."
            )
    return {name: out.get(name, option.default) for name, option in options.items()}


def parse_assignment(text: str) -> tuple[str, str, str]:
    """Split ``kind.option=value`` (or ``visualizer.NAME.option=value``) into ``(target, option, value)``; target is
    a kind, or ``KIND.NAME`` for a kind a run has several of."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    many = [k for k in BY_NAME.values() if k.many]
    if not sep or len(parts) < 2 or not all(parts):
        raise OptionError(
            f"cannot read option {text!r}: write KIND.OPTION=VALUE, for example "
            f"`{wording.option('loss', 'label_smoothing', 0.1)}` or "
            f"`{wording.option('updater', 'momentum', 0.9)}` (for a "
            f"{' or '.join(k.name for k in many)}, `{wording.option(many[0].option_prefix, 'OPTION', 'VALUE')}`)."
        )
    if parts[0] not in BY_NAME:
        raise OptionError(f"cannot read option {text!r}: {parts[0]!r} is not a component kind; "
                          f"kinds are: {', '.join(KINDS)}.")
    row = BY_NAME[parts[0]]
    if row.many and len(parts) < 3:
        raise OptionError(
            f"cannot read option {text!r}: {row.name} options name the {row.name}, as in "
            f"`{wording.option(row.option_prefix, 'OPTION', 'VALUE')}` (a run may have several)."
        )
    if not row.many and len(parts) != 2:
        raise OptionError(f"cannot read option {text!r}: write {parts[0]}.OPTION=VALUE.")
    # Option names are identifiers, so the last part is the option; a component's name may contain dots.
    return row.target(".".join(parts[1:-1])), parts[-1], value
