"""A table's structure, one typed model from the source's catalog to the target's DDL.

:func:`migration_manager.schema.reflect_tables` reads it from a database, the manifest carries it
(``Table.structure``: validated whole when a file is read), the plan compares it with the
target's and the apply creates or changes the table from it. What turns it into SQL lives in
:mod:`migration_manager.schema.structure` (a SQLAlchemy ``Table``, a type's DDL); this module
imports no database library, so that reading a manifest does not load one.

Every key is declared (``extra="forbid"``). Identifiers are PostgreSQL names: non-empty, at most
63 bytes of UTF-8, no NUL; nothing else is restricted (quotes, dots, spaces and unicode are
valid names and reach SQL only through quoting). The JSON form (``model_dump(mode="json",
by_alias=True)``) is the manifest's, key for key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAMEDATALEN = 63  # PostgreSQL's identifier limit in bytes


def _identifier(value: str) -> str:
    if not value:
        raise ValueError("an identifier may not be empty")
    if "\x00" in value:
        raise ValueError("an identifier may not contain NUL")
    size = len(value.encode("utf-8"))
    if size > NAMEDATALEN:
        raise ValueError(
            f"an identifier is at most {NAMEDATALEN} bytes of UTF-8 (this one has {size})"
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
# a reflected option (an index's ``postgresql_where``, a foreign key's ``ondelete``) as JSON
Option = str | int | bool | float | list[str] | None
Sorting = Literal["asc", "desc", "nulls_first", "nulls_last"]


class _Part(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )


class ColumnStructure(_Part):
    name: Identifier
    type: str = Field(min_length=1)  # format_type() text: "character varying(255)"
    nullable: bool
    default: str | None = None
    identity: dict[str, int | bool | str] | None = None  # always, start, increment, ...
    computed: str | None = None  # a generated column's expression
    comment: str | None = None


class UniqueConstraint(_Part):
    name: Identifier | None
    columns: tuple[Identifier, ...]


class IndexStructure(_Part):
    name: Identifier | None
    unique: bool
    columns: tuple[Identifier | None, ...]  # None where an expression takes a column's place
    expressions: tuple[str, ...] | None = None
    column_sorting: dict[str, tuple[Sorting, ...]] | None = None
    dialect_options: dict[str, Option] = {}


class ForeignKeyStructure(_Part):
    name: Identifier | None
    columns: tuple[Identifier, ...]
    referred_schema: Identifier | None
    referred_table: Identifier
    referred_columns: tuple[Identifier, ...]
    options: dict[str, Option] = {}


class CheckConstraint(_Part):
    name: Identifier | None
    sqltext: str


class SequenceStructure(_Part):
    name: Identifier
    schema_: Identifier | None = Field(alias="schema")
    column: Identifier | None
    data_type: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cache: int
    cycle: bool
    last_value: int | None
    identity: bool = False

    @property
    def schema(self) -> str | None:  # type: ignore[override]  # BaseModel.schema is deprecated
        return self.schema_


class TypeCheck(_Part):
    name: Identifier
    definition: str


class TypeStructure(_Part):
    """A user-defined enum or domain type that a table's columns use.

    Used directly, as the element of an array or as the base of a domain (a domain over an
    enum lists the enum too). A table's ``types`` are in dependency order: a type comes after
    the types it is built on, so creating them in that order always works.
    """

    schema_: Identifier = Field(alias="schema")
    name: Identifier
    # "enum" or "domain" in a file; a type of the target of the same name may be of another
    # kind (schema.find_type reports pg_type.typtype then)
    kind: str
    labels: tuple[str, ...] = ()  # enum: its labels in sort order (pg_enum.enumsortorder)
    base_type: str | None = None  # domain: format_type() text of the base type
    not_null: bool = False  # domain
    default: str | None = None  # domain: pg_type.typdefault
    checks: tuple[TypeCheck, ...] = ()  # domain: its CHECK constraints, by name

    @property
    def schema(self) -> str:  # type: ignore[override]  # BaseModel.schema is deprecated
        return self.schema_


class TableStructure(_Part):
    """Everything needed to create the table anywhere and to compare it with a target's."""

    name: Identifier
    schema_: Identifier | None = Field(alias="schema")
    columns: tuple[ColumnStructure, ...]
    primary_key: tuple[Identifier, ...] = ()
    primary_key_name: Identifier | None = None
    unique_constraints: tuple[UniqueConstraint, ...] = ()
    indexes: tuple[IndexStructure, ...] = ()
    foreign_keys: tuple[ForeignKeyStructure, ...] = ()
    check_constraints: tuple[CheckConstraint, ...] = ()
    sequences: tuple[SequenceStructure, ...] = ()
    comment: str | None = None
    # enums and domains the columns use, dependencies first; files written before types were
    # recorded have none: read as "uses no such type"
    types: tuple[TypeStructure, ...] = ()

    @property
    def schema(self) -> str | None:  # type: ignore[override]  # BaseModel.schema is deprecated
        return self.schema_

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Columns that carry data (generated columns are computed by the target)."""
        return tuple(c.name for c in self.columns if c.computed is None)

    def column(self, name: str) -> ColumnStructure:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def auto_increment_columns(self) -> tuple[str, ...]:
        """Key columns filled by a sequence: serial, identity, or a ``nextval`` default."""
        out = []
        for name in self.primary_key:
            col = self.column(name)
            if col.identity is not None or (col.default and "nextval(" in col.default):
                out.append(name)
        return tuple(out)

    @property
    def key_kind(self) -> str:
        if not self.primary_key:
            return "none"
        if len(self.primary_key) > 1:
            return "composite"
        col = self.column(self.primary_key[0])
        if col.identity is not None:
            return "identity"
        if col.default and "nextval(" in col.default:
            return "serial"
        t = col.type.lower()
        if t == "uuid":
            return "uuid"
        if t.startswith(("character", "text", "varchar")):
            return "string"
        if t in ("bigint", "integer", "smallint"):
            return "integer"
        return "other"

    def digest(self) -> str:
        """sha256 of the structure's canonical JSON (recorded in the file; informational)."""
        document = self.model_dump(mode="json", by_alias=True)
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def without_positions(self) -> TableStructure:
        """The structure without its sequences' positions (data, not structure: compared by
        ``execute.sequences``), for telling structures apart."""
        sequences = tuple(s.model_copy(update={"last_value": None}) for s in self.sequences)
        return self.model_copy(update={"sequences": sequences})
