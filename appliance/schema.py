"""The one validation mechanism of every TOML file: frozen dataclasses + cattrs.

A configuration section is a frozen dataclass; :func:`structure` turns a TOML
table into it and reports *every* problem at once as one
:class:`~appliance.errors.ConfigError` whose ``problems`` name
``section.key`` (style guide 4.8, after mopidy's ``ConfigSchema``). The
service configuration (:mod:`appliance.config`, including the Device options
and ``[ui]``) and the exchange's file (:mod:`appliance.exchange.config`) both
go through it.

Why cattrs: its detailed validation collects the errors of every field,
nested table and list item into an ``ExceptionGroup`` whose notes carry the
attribute name or index, and ``forbid_extra_keys`` reports unknown keys in the
same pass; it structures plain stdlib dataclasses, so ``dataclasses.fields``
and ``replace`` keep working on the results. msgspec stops at the first error,
and pydantic costs about ten times the memory and import time on the phone
(figures in the commit that introduced this module).

cattrs coerces by default (``int("3")``, ``bool("yes")``); the hooks below
make it strict instead: a TOML ``"yes"`` is not ``true``, ``"5000"`` is not
``5000``, a string is not a list of characters. Only an integer may stand for
a float, as TOML itself writes ``10`` for ``10.0``.

:func:`dumps` writes validated values back as TOML (``appliance show-config``);
``tomllib.loads`` of its output gives the same values.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    list_structure_factory,
    mapping_structure_factory,
)
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from appliance.errors import ConfigError

__all__ = [
    "Hook",
    "Problems",
    "converter",
    "did_you_mean",
    "dumps",
    "register",
    "structure",
]

T = TypeVar("T")

#: A field hook: gets the raw TOML value, returns the field's value or raises
#: ``ValueError`` (its message is the reason) or ``ConfigError`` (relative keys).
Hook = Callable[[Any], Any]


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, else ``""``."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


class Problems:
    """Collects ``(key, reason)`` pairs; :meth:`check` raises them all at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, reason: str) -> None:
        """Record one problem."""
        self.items.append((key, reason))

    def extend(self, exc: ConfigError, prefix: str = "") -> None:
        """Record every problem of ``exc``, with keys below ``prefix``."""
        for key, reason in exc.problems:
            self.add(_join(prefix, key), reason)

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self) -> None:
        """Raise one :class:`ConfigError` listing every problem, if any."""
        if self.items:
            raise ConfigError.from_problems(self.items)


# --- strict scalar and container hooks -----------------------------------------


def _strict_bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _strict_int(value: Any, _type: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {value!r}")
    return value


def _strict_float(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {value!r}")
    return float(value)


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    return value


def _origin(type_: Any) -> Any:
    return typing.get_origin(type_)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(str, _strict_str)

    def sequences(type_: Any) -> Callable[[Any, Any], Any]:
        inner = (
            list_structure_factory(type_, conv)
            if _origin(type_) is list
            else homogenous_tuple_structure_factory(type_, conv)
        )

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise ValueError(f"must be an array, not {value!r}")
            return inner(value, t)

        return hook

    def mappings(type_: Any) -> Callable[[Any, Any], Any]:
        inner = mapping_structure_factory(type_, conv)

        def hook(value: Any, t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise ValueError(f"must be a table, not {value!r}")
            return inner(value, t)

        return hook

    conv.register_structure_hook_factory(
        lambda t: (
            _origin(t) is list
            or (_origin(t) is tuple and typing.get_args(t)[1:] == (Ellipsis,))
        ),
        sequences,
    )
    conv.register_structure_hook_factory(
        lambda t: _origin(t) in (dict, Mapping), mappings
    )
    return conv


#: The converter every schema registers with.
converter = _make_converter()


def register(cls: type[Any], hooks: Mapping[str, Hook] | None = None) -> None:
    """Register dataclass ``cls``, with custom hooks for some of its fields.

    A hook gets the raw value only; it validates and converts it (a choice, a
    range, a list of IP addresses) and raises ``ValueError`` with the reason.
    """

    def field_hook(fn: Hook) -> Callable[[Any, Any], Any]:
        return lambda value, _type: fn(value)

    overrides: dict[str, Any] = {
        name: override(struct_hook=field_hook(fn)) for name, fn in (hooks or {}).items()
    }
    inner = make_dict_structure_fn(
        cls,
        converter,
        _cattrs_forbid_extra_keys=True,
        _cattrs_detailed_validation=True,
        **overrides,
    )

    def hook(value: Any, type_: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a table, not {value!r}")
        return inner(value, type_)

    converter.register_structure_hook(cls, hook)


def structure(data: Any, cls: type[T], prefix: str = "") -> T:
    """Validate ``data`` into ``cls``.

    Raises:
        ConfigError: every problem found, keys below ``prefix``
            (``device.backoff_max_ms``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "config", "must be a table")
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ValueError) as exc:
        raise ConfigError.from_problems(list(_problems(exc, prefix))) from exc


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if not prefix:
        return key
    return f"{prefix}.{key}" if key else prefix


def _where(exc: BaseException, prefix: str) -> str:
    """The key an exception's cattrs note points at, below ``prefix``."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return _join(prefix, note.name)
        if isinstance(note, IterableValidationNote):
            index = note.index
            return _join(prefix, index if isinstance(index, int) else str(index))
    return prefix


def _problems(exc: BaseException, prefix: str) -> Iterator[tuple[str, str]]:
    where = _where(exc, prefix)
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [f.name for f in fields(exc.cl)] if is_dataclass(exc.cl) else []
        for extra in sorted(exc.extra_fields):
            yield _join(where, extra), "unknown key" + did_you_mean(extra, known)
    elif isinstance(exc, ClassValidationError | IterableValidationError):
        for inner in exc.exceptions:
            yield from _problems(inner, where)
    elif isinstance(exc, ConfigError):
        for key, reason in exc.problems:
            yield _join(where, key), reason
    elif isinstance(exc, KeyError):
        yield where, "required"
    else:
        yield where, str(exc)


# --- writing TOML back ------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


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
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same escapes (\" \\ \n \t
        # \uXXXX) and control characters escaped (TOML 1.0, "String").
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps(document: Mapping[str, Mapping[str, Any]]) -> str:
    """Write ``{section: {key: value}}`` as TOML; ``None`` values are left out.

    Nested tables of a section become ``[section.key]`` tables; tables inside
    arrays are inline tables.
    """
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        subtables = []
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, Mapping):
                subtables.append((key, value))
            else:
                lines.append(f"{_key(key)} = {_value(value)}")
        for key, value in subtables:
            table(f"{name}.{_key(key)}", value)

    for section, values in document.items():
        table(_key(section), values)
    return "\n".join(lines) + "\n"
