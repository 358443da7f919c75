"""pydantic's ValidationError in the project's words: each problem names where it is and what to do.

The documents that cross a boundary (rules, rule sets, pipelines, the manifest) are pydantic
models; their modules turn a ``ValidationError`` into a ``ConfigError`` (or ``ArchiveError``)
with these helpers, so that a message keeps naming the file, the key and the allowed values.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from migration_manager.errors import MigrationError

T = TypeVar("T")
Loc = tuple[int | str, ...]

_KINDS = {
    "bool_type": "bool",
    "string_type": "str",
    "int_type": "int",
    "int_from_float": "int",
    "float_type": "float",
    "list_type": "list",
    "tuple_type": "list",
    "dict_type": "object",
    "model_type": "object",
}
TYPE_ERRORS = frozenset({*_KINDS, "model_attributes_type"})


def checked(check: Callable[[Any], T]) -> Callable[[Any], T]:
    """A project check (raising ``ConfigError``) as a pydantic validator (raising ``ValueError``)."""

    def validate(value: Any) -> T:
        try:
            return check(value)
        except MigrationError as exc:
            raise ValueError(str(exc)) from None

    return validate


def literal_names(err: ErrorDetails) -> list[str]:
    """The allowed values of a ``literal_error``, in their declared order."""
    expected = str((err.get("ctx") or {}).get("expected", ""))
    return re.findall(r"'([^']*)'", expected)


def text(err: ErrorDetails) -> str:
    """What is wrong with one value, without where it is."""
    kind = err["type"]
    if kind == "value_error":
        return str((err.get("ctx") or {}).get("error", err["msg"]))
    if kind == "literal_error":
        return f"{err['input']!r} is not one of {', '.join(literal_names(err))}"
    if kind == "missing":
        return "is required"
    if kind in _KINDS:
        return f"{err['input']!r} is not {_KINDS[kind]}"
    return str(err["msg"])


def _models(annotation: Any) -> Iterator[Any]:
    """The types inside an annotation (``X | None``, ``Annotated[X, ...]``, ``dict[str, X]``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _models(arg)
    else:
        yield annotation


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that validates the value at ``loc`` (None: not a model)."""
    current: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for n, f in current.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if field is None:
            return None
        current = None
        for candidate in _models(field.annotation):
            origin = typing.get_origin(candidate)
            if origin in (list, tuple, dict) and parts:
                parts.pop(0)  # the index or key
                candidate = typing.get_args(candidate)[-1 if origin is dict else 0]
                candidate = next(iter(_models(candidate)), None)
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def keys_of(model: type[BaseModel] | None) -> list[str]:
    """The keys a model's document may have (aliases where a field has one)."""
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def split(
    errors: list[ErrorDetails], under: Loc = ()
) -> tuple[dict[Loc, list[str]], list[ErrorDetails]]:
    """(unknown keys grouped by the location of their object, every other error), of the errors
    inside ``under`` (their locations relative to it)."""
    unknown: dict[Loc, list[str]] = {}
    others: list[ErrorDetails] = []
    for err in errors:
        full = tuple(err["loc"])
        if full[: len(under)] != under:
            continue
        loc = full[len(under) :]
        if err["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        else:
            others.append({**err, "loc": loc})
    return unknown, others
