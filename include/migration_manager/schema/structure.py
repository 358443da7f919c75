"""A table structure as SQL: its SQLAlchemy ``Table`` (for Alembic's comparison and DDL) and
the DDL of the enum and domain types it uses.

The structure itself is :mod:`migration_manager.table_structure`'s model, which the manifest
carries; this module is what the schema package does with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
from migration_manager.table_structure import ForeignKeyStructure, TableStructure, TypeStructure


def type_name(t: TypeStructure) -> str:
    """The type's name as SQL, schema-qualified, quoted where needed: ``public."Mood"``."""
    return ddl_name(t.schema, t.name).as_string(None)


def domain_definition(t: TypeStructure, default_schema: str | None = None) -> tuple[Any, ...]:
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
        plain(t.base_type),
        t.not_null,
        plain(t.default),
        tuple(sorted(plain(_valid_check(c.definition)) or "" for c in t.checks)),
    )


def create_type_sql(t: TypeStructure, context: psycopg.Connection[Any] | None = None) -> str:
    """``CREATE TYPE ... AS ENUM`` or ``CREATE DOMAIN``; labels quoted as literals for ``context``."""
    name = ddl_name(t.schema, t.name)
    if t.kind == "enum":
        labels = sql.SQL(", ").join(sql.Literal(label) for label in t.labels)
        return sql.SQL("CREATE TYPE {} AS ENUM ({})").format(name, labels).as_string(context)
    # base type, default and checks: the catalog's own SQL texts, as the source has them
    parts: list[sql.Composable] = [
        sql.SQL("CREATE DOMAIN {} AS {}").format(name, sql.SQL(str(t.base_type)))
    ]
    if t.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(t.default)))
    if t.not_null:
        parts.append(sql.SQL("NOT NULL"))
    for check in t.checks:
        parts.append(
            sql.SQL("CONSTRAINT {} {}").format(
                ddl_name(None, check.name), sql.SQL(_valid_check(check.definition))
            )
        )
    return sql.SQL(" ").join(parts).as_string(context)


def _valid_check(definition: str) -> str:
    """A domain CHECK as CREATE DOMAIN takes it: ``NOT VALID`` exists only for ALTER DOMAIN."""
    return definition.removesuffix(" NOT VALID")


def to_table(structure: TableStructure, metadata: sa.MetaData) -> sa.Table:
    """The structure as a SQLAlchemy ``Table`` of ``metadata``, with stubs of the tables its
    foreign keys refer to."""
    columns: list[sa.Column[Any]] = []
    for c in structure.columns:
        args: list[Any] = []
        if c.identity is not None:
            # the reflected options, by SQLAlchemy's own names (always, start, increment, ...)
            args.append(sa.Identity(**c.identity))  # type: ignore[arg-type]
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
    if structure.primary_key:
        constraints.append(
            sa.PrimaryKeyConstraint(*structure.primary_key, name=structure.primary_key_name)
        )
    for u in structure.unique_constraints:
        constraints.append(sa.UniqueConstraint(*u.columns, name=u.name))
    for ck in structure.check_constraints:
        constraints.append(sa.CheckConstraint(sql_text(ck.sqltext), name=ck.name))
    table = sa.Table(
        structure.name,
        metadata,
        *columns,
        *constraints,
        schema=structure.schema,
        comment=structure.comment,
    )
    for f in structure.foreign_keys:
        # Column objects, never "schema.table.column" strings: a name may hold dots
        referred = _referred_table(metadata, table, f)
        table.append_constraint(
            sa.ForeignKeyConstraint(
                list(f.columns),
                [referred.c[rc] for rc in f.referred_columns],
                name=f.name,
                onupdate=_text(f.options.get("onupdate")),
                ondelete=_text(f.options.get("ondelete")),
                deferrable=None if (d := f.options.get("deferrable")) is None else bool(d),
                initially=_text(f.options.get("initially")),
            )
        )
    for ix in structure.indexes:
        elements: list[Any] = []
        exprs = ix.expressions or ()
        sorting = ix.column_sorting or {}
        for i, col in enumerate(ix.columns):
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
        # the reflected options (postgresql_where, postgresql_include, ...), by SQLAlchemy's names
        kwargs: dict[str, object] = {
            k: v for k, v in ix.dialect_options.items() if v not in (None, [], "btree")
        }
        if "postgresql_where" in kwargs:
            kwargs["postgresql_where"] = sql_text(str(kwargs["postgresql_where"]))
        index = sa.Index(ix.name, *elements, unique=ix.unique, **kwargs)  # type: ignore[arg-type]
        if index.table is None:
            # only expressions (lower(email)): no column ties the index to its table
            table.append_constraint(index)
    return table


def _text(value: object) -> str | None:
    return None if value is None else str(value)


SORTING: dict[str, Callable[[Any], Any]] = {
    "asc": sa.asc,
    "desc": sa.desc,
    "nulls_first": sa.nulls_first,
    "nulls_last": sa.nulls_last,
}


def _referred_table(metadata: sa.MetaData, table: sa.Table, fk: ForeignKeyStructure) -> sa.Table:
    """The table a foreign key refers to: ``table`` itself, or a stub holding the referred columns.

    A stub is enough for the constraint's DDL and for Alembic's comparison (it only reads the
    referred table's name, schema and column names).
    """
    schema, name = fk.referred_schema, fk.referred_table
    if (schema, name) == (table.schema, table.name):
        return table
    found = next(
        (t for t in metadata.tables.values() if (t.schema, t.name) == (schema, name)), None
    )
    if found is None:
        found = sa.Table(name, metadata, schema=schema)
    for rc in fk.referred_columns:
        if rc not in found.c:
            found.append_column(sa.Column(rc, sa.Integer))
    return found
