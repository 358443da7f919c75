"""The table structure a migration file carries: its model, its JSON, and its SQLAlchemy ``Table``.

Plain frozen dataclasses (:class:`TableStructure` and its columns, sequences, enum and domain
types) that travel as JSON in the manifest; on the target :meth:`TableStructure.to_table`
turns one into a SQLAlchemy ``Table`` for Alembic's comparison.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from migration_manager.schema.sqltext import (
    DIALECT,
    ddl_name,
    default_clause,
    sql_text,
    type_from_text,
)


@dataclass(frozen=True)
class ColumnStructure:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    identity: dict[str, Any] | None = None
    computed: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class SequenceStructure:
    name: str
    schema: str | None
    column: str | None
    data_type: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cache: int
    cycle: bool
    last_value: int | None
    identity: bool = False


@dataclass(frozen=True)
class TypeStructure:
    """A user-defined enum or domain type that a table's columns use.

    Used directly, as the element of an array or as the base of a domain (a domain over an
    enum lists the enum too). A table's ``types`` are in dependency order: a type comes after
    the types it is built on, so creating them in that order always works.
    """

    schema: str
    name: str
    kind: str  # "enum" or "domain" (find_type may meet a target type of another kind)
    labels: tuple[str, ...] = ()  # enum: its labels in sort order (pg_enum.enumsortorder)
    base_type: str | None = None  # domain: format_type() text of the base type
    not_null: bool = False  # domain
    default: str | None = None  # domain: pg_type.typdefault
    checks: tuple[dict[str, str], ...] = ()  # domain: {"name", "definition"}, by name

    @property
    def qualified(self) -> str:
        """The type's name as SQL, schema-qualified, quoted where needed: ``public."Mood"``."""
        return ddl_name(self.schema, self.name).as_string(None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "kind": self.kind,
            "labels": list(self.labels),
            "base_type": self.base_type,
            "not_null": self.not_null,
            "default": self.default,
            "checks": [dict(c) for c in self.checks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TypeStructure:
        return cls(
            schema=d["schema"],
            name=d["name"],
            kind=d["kind"],
            labels=tuple(d.get("labels") or ()),
            base_type=d.get("base_type"),
            not_null=bool(d.get("not_null")),
            default=d.get("default"),
            checks=tuple(dict(c) for c in d.get("checks") or ()),
        )

    def domain_definition(self, default_schema: str | None = None) -> tuple[Any, ...]:
        """What makes two domains alike (constraint names aside).

        Texts from catalogs name a type of ``default_schema`` with or without its schema,
        depending on the session's search path; the schema is left out here.
        """

        def plain(text: str | None) -> str | None:
            if text is None or not default_schema:
                return text
            prep = DIALECT.identifier_preparer
            for prefix in {f"{prep.quote_schema(default_schema)}.", f'"{default_schema}".'}:
                text = re.sub(rf"(?<![\w.\"]){re.escape(prefix)}", "", text)
            return text

        return (
            plain(self.base_type),
            self.not_null,
            plain(self.default),
            tuple(sorted(plain(_valid_check(c["definition"])) or "" for c in self.checks)),
        )

    def create_sql(self, context: psycopg.Connection[Any] | None = None) -> str:
        """``CREATE TYPE ... AS ENUM`` or ``CREATE DOMAIN``; labels quoted as literals for ``context``."""
        name = ddl_name(self.schema, self.name)
        if self.kind == "enum":
            labels = sql.SQL(", ").join(sql.Literal(label) for label in self.labels)
            return sql.SQL("CREATE TYPE {} AS ENUM ({})").format(name, labels).as_string(context)
        # base type, default and checks: the catalog's own SQL texts, as the source has them
        parts: list[sql.Composable] = [
            sql.SQL("CREATE DOMAIN {} AS {}").format(name, sql.SQL(str(self.base_type)))
        ]
        if self.default is not None:
            parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(self.default)))
        if self.not_null:
            parts.append(sql.SQL("NOT NULL"))
        for check in self.checks:
            parts.append(
                sql.SQL("CONSTRAINT {} {}").format(
                    ddl_name(None, check["name"]), sql.SQL(_valid_check(check["definition"]))
                )
            )
        return sql.SQL(" ").join(parts).as_string(context)


def _valid_check(definition: str) -> str:
    """A domain CHECK as CREATE DOMAIN takes it: ``NOT VALID`` exists only for ALTER DOMAIN."""
    return definition.removesuffix(" NOT VALID")


@dataclass(frozen=True)
class TableStructure:
    """Everything needed to create the table anywhere and to compare it with a target's."""

    name: str
    schema: str | None
    columns: tuple[ColumnStructure, ...]
    primary_key: tuple[str, ...] = ()
    primary_key_name: str | None = None
    unique_constraints: tuple[dict[str, Any], ...] = ()
    indexes: tuple[dict[str, Any], ...] = ()
    foreign_keys: tuple[dict[str, Any], ...] = ()
    check_constraints: tuple[dict[str, Any], ...] = ()
    sequences: tuple[SequenceStructure, ...] = ()
    comment: str | None = None
    types: tuple[TypeStructure, ...] = ()  # enums and domains the columns use, dependencies first

    # -- derived facts

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

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": self.schema,
            "columns": [c.__dict__.copy() for c in self.columns],
            "primary_key": list(self.primary_key),
            "primary_key_name": self.primary_key_name,
            "unique_constraints": [dict(u) for u in self.unique_constraints],
            "indexes": [dict(i) for i in self.indexes],
            "foreign_keys": [dict(f) for f in self.foreign_keys],
            "check_constraints": [dict(c) for c in self.check_constraints],
            "sequences": [s.__dict__.copy() for s in self.sequences],
            "comment": self.comment,
            "types": [t.to_dict() for t in self.types],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableStructure:
        return cls(
            name=d["name"],
            schema=d.get("schema"),
            columns=tuple(ColumnStructure(**c) for c in d["columns"]),
            primary_key=tuple(d.get("primary_key") or ()),
            primary_key_name=d.get("primary_key_name"),
            unique_constraints=tuple(d.get("unique_constraints") or ()),
            indexes=tuple(d.get("indexes") or ()),
            foreign_keys=tuple(d.get("foreign_keys") or ()),
            check_constraints=tuple(d.get("check_constraints") or ()),
            sequences=tuple(SequenceStructure(**s) for s in d.get("sequences") or ()),
            comment=d.get("comment"),
            # files written before types were recorded have none: read as "uses no such type"
            types=tuple(TypeStructure.from_dict(t) for t in d.get("types") or ()),
        )

    # -- SQLAlchemy

    def to_table(self, metadata: sa.MetaData) -> sa.Table:
        columns: list[sa.Column[Any]] = []
        for c in self.columns:
            args: list[Any] = []
            if c.identity is not None:
                args.append(sa.Identity(**c.identity))
            if c.computed is not None:
                args.append(sa.Computed(sql_text(c.computed), persisted=True))
            columns.append(
                sa.Column(
                    c.name,
                    type_from_text(c.type),
                    *args,
                    nullable=c.nullable,
                    server_default=default_clause(c.default) if c.identity is None else None,
                    comment=c.comment,
                    # never SERIAL (the sequence travels as a default); SQLAlchemy refuses
                    # autoincrement=False next to an Identity, which renders its own clause
                    autoincrement="auto" if c.identity is not None else False,
                )
            )
        constraints: list[Any] = []
        if self.primary_key:
            constraints.append(
                sa.PrimaryKeyConstraint(*self.primary_key, name=self.primary_key_name)
            )
        for u in self.unique_constraints:
            constraints.append(sa.UniqueConstraint(*u["columns"], name=u["name"]))
        for ck in self.check_constraints:
            constraints.append(sa.CheckConstraint(sql_text(ck["sqltext"]), name=ck["name"]))
        table = sa.Table(
            self.name, metadata, *columns, *constraints, schema=self.schema, comment=self.comment
        )
        for f in self.foreign_keys:
            # Column objects, never "schema.table.column" strings: a name may hold dots
            referred = _referred_table(metadata, table, f)
            table.append_constraint(
                sa.ForeignKeyConstraint(
                    f["columns"],
                    [referred.c[rc] for rc in f["referred_columns"]],
                    name=f["name"],
                    **{
                        k: v
                        for k, v in (f.get("options") or {}).items()
                        if k in ("onupdate", "ondelete", "deferrable", "initially")
                    },
                )
            )
        for ix in self.indexes:
            elements: list[Any] = []
            exprs = ix.get("expressions") or []
            sorting = ix.get("column_sorting") or {}
            for i, col in enumerate(ix["columns"]):
                element: Any
                if col is not None:
                    element = table.c[col]
                elif i < len(exprs):
                    element = sql_text(exprs[i])
                else:
                    continue
                key = col if col is not None else exprs[i]
                for modifier in sorting.get(key) or ():
                    # DESC, NULLS FIRST / LAST, in the order reflection reports them
                    element = SORTING[modifier](element)
                elements.append(element)
            kwargs = {
                k: v
                for k, v in (ix.get("dialect_options") or {}).items()
                if v not in (None, [], "btree")
            }
            if "postgresql_where" in kwargs:
                kwargs["postgresql_where"] = sql_text(kwargs["postgresql_where"])
            index = sa.Index(ix["name"], *elements, unique=ix.get("unique", False), **kwargs)
            if index.table is None:
                # only expressions (lower(email)): no column ties the index to its table
                table.append_constraint(index)
        return table


SORTING: dict[str, Callable[[Any], Any]] = {
    "asc": sa.asc,
    "desc": sa.desc,
    "nulls_first": sa.nulls_first,
    "nulls_last": sa.nulls_last,
}


def _referred_table(metadata: sa.MetaData, table: sa.Table, fk: dict[str, Any]) -> sa.Table:
    """The table a foreign key refers to: ``table`` itself, or a stub holding the referred columns.

    A stub is enough for the constraint's DDL and for Alembic's comparison (it only reads the
    referred table's name, schema and column names).
    """
    schema, name = fk.get("referred_schema"), fk["referred_table"]
    if (schema, name) == (table.schema, table.name):
        return table
    found = next(
        (t for t in metadata.tables.values() if (t.schema, t.name) == (schema, name)), None
    )
    if found is None:
        found = sa.Table(name, metadata, schema=schema)
    for rc in fk["referred_columns"]:
        if rc not in found.c:
            found.append_column(sa.Column(rc, sa.Integer))
    return found
