"""Config sections as pydantic dataclasses, and pydantic's errors as one line naming the dotted key.

A section is ``@dataclass(config=SCHEMA)`` (``pydantic.dataclasses.dataclass``) with ``StrictInt``,
``StrictFloat``, ``StrictBool``, ``StrictStr`` and ``Literal`` leaves, and ``Section[...]`` sub-sections:
unknown keys are refused, ``"1"`` is no integer and ``1`` no boolean (an integer is a number), inf and nan are
no numbers. :func:`validate` reads a raw mapping into such a section, e.g.
``config optim.lrr: unknown key; valid keys: lr, weight_decay, ...`` or
``config optim.lr: expected a number, got 'abc' (str)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from whisperkd.errors import UserError

# Config-wide strict=True would also refuse a mapping for a sub-section: the leaves are Strict* instead.
SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False)

T = TypeVar("T")
Section = Annotated[T, BeforeValidator(lambda value: {} if value is None else value)]  # `optim:` alone: defaults

UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden")


def describe(hint) -> str:
    """A type in words: ``int | list[int] | None`` -> "an integer or a list of integers or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"


def _user_error(cls, raw, key: str, err: ValidationError) -> UserError:
    """Pydantic's first error (an unknown key before any other) as one line naming the dotted key."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] in UNKNOWN_KEY), errors[0])
    hint, value, path = cls, raw, [key] if key else []
    for part in first["loc"]:  # down the sections to the key; past it come list indices and union members
        if not dataclasses.is_dataclass(hint) or not isinstance(part, str):
            break
        names = [f.name for f in dataclasses.fields(hint)]
        if part not in names:
            what = "key" if path else "section"
            return UserError(f"config {'.'.join([*path, part])}: unknown {what}; valid {what}s: {', '.join(names)}")
        hint, value = typing.get_type_hints(hint)[part], value.get(part) if isinstance(value, dict) else None
        path.append(part)
    where = "config " + ".".join(path) if path else "config"
    if dataclasses.is_dataclass(hint):
        return UserError(f"{where}: expected a mapping of keys, got {_show(value)}")
    if first["type"] == "finite_number":
        return UserError(f"{where}: must be a finite number")
    if typing.get_origin(hint) is Literal:
        return UserError(f"{where}: got {_show(value)}; valid values: {', '.join(map(str, typing.get_args(hint)))}")
    return UserError(f"{where}: expected {describe(hint)}, got {_show(value)}")


def validate(cls: type[T], raw: Any, key: str = "") -> T:
    """``raw`` (a mapping; None: the defaults) as a ``cls`` section, checked by pydantic; a mistake is one
    UserError line naming the dotted key under ``key`` (the section's own place in the config)."""
    try:
        return TypeAdapter(cls).validate_python({} if raw is None else raw)
    except ValidationError as err:
        raise _user_error(cls, raw, key, err) from None
