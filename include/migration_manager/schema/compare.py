"""Compare a table's structure with the target's through Alembic's autogenerate.

:func:`diff_table` returns the Alembic operations that make the target's table match the
source's (:class:`SchemaDiff`), each described as a :class:`SchemaChange`; destructive ones
are held back unless dropping is allowed. No hand-written differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from psycopg import sql

from migration_manager.schema.catalog import column_facts
from migration_manager.schema.comparators import (
    PLUGIN,
    add_foreign_key_op,
    compare_default,
    compare_type,
    setup_alembic,
)
from migration_manager.schema.sqltext import ddl_name, type_text
from migration_manager.schema.structure import to_table
from migration_manager.table_structure import TableStructure

# Alembic is imported where a structure is compared or changed: a unit whose structure the
# plan found equal never loads it (one import less at the start of every apply_table).
if TYPE_CHECKING:
    from alembic.operations import ops as alembic_ops
    from alembic.runtime.migration import MigrationContext


@dataclass(frozen=True)
class SchemaChange:
    """One structural difference found by Alembic, as a describable, loggable value."""

    kind: str  # add_table, add_column, alter_column, add_index, drop_column, ...
    description: str
    destructive: bool = False


@dataclass
class SchemaDiff:
    table: str
    ops: list[alembic_ops.MigrateOperation] = field(default_factory=list)
    changes: list[SchemaChange] = field(default_factory=list)
    skipped: list[SchemaChange] = field(default_factory=list)
    creates_table: bool = False


def _walk(
    ops_list: Iterable[alembic_ops.MigrateOperation],
) -> Iterator[alembic_ops.MigrateOperation]:
    from alembic.operations import ops as alembic_ops

    for op in ops_list:
        if isinstance(op, alembic_ops.OpContainer):
            yield from _walk(op.ops)
        else:
            yield op


def _describe(op: alembic_ops.MigrateOperation) -> SchemaChange:
    from alembic.operations import ops as alembic_ops

    if isinstance(op, alembic_ops.CreateTableOp):
        return SchemaChange("add_table", f"create table {op.table_name}")
    if isinstance(op, alembic_ops.DropTableOp):
        return SchemaChange("drop_table", f"drop table {op.table_name}", destructive=True)
    if isinstance(op, alembic_ops.AddColumnOp):
        return SchemaChange(
            "add_column", f"add column {op.column.name} {type_text(op.column.type)}"
        )
    if isinstance(op, alembic_ops.DropColumnOp):
        return SchemaChange("drop_column", f"drop column {op.column_name}", destructive=True)
    if isinstance(op, alembic_ops.AlterColumnOp):
        parts = []
        if op.modify_type is not None:
            before = type_text(op.existing_type) if op.existing_type is not None else "?"
            parts.append(f"type {before} -> {type_text(op.modify_type)}")
        if op.modify_nullable is not None:
            parts.append("nullable" if op.modify_nullable else "not null")
        if op.modify_server_default is not False:
            parts.append("default")
        if op.modify_comment is not False:
            parts.append("comment")
        return SchemaChange("alter_column", f"alter column {op.column_name}: {', '.join(parts)}")
    if isinstance(op, alembic_ops.CreateIndexOp):
        return SchemaChange("add_index", f"create index {op.index_name}")
    if isinstance(op, alembic_ops.DropIndexOp):
        return SchemaChange("drop_index", f"drop index {op.index_name}", destructive=True)
    if isinstance(op, alembic_ops.AddConstraintOp):
        return SchemaChange(
            "add_constraint", f"add constraint {getattr(op, 'constraint_name', '')}"
        )
    if isinstance(op, alembic_ops.DropConstraintOp):
        return SchemaChange(
            "drop_constraint", f"drop constraint {op.constraint_name}", destructive=True
        )
    if isinstance(op, (alembic_ops.CreateTableCommentOp, alembic_ops.DropTableCommentOp)):
        return SchemaChange("table_comment", "table comment")
    return SchemaChange(type(op).__name__, repr(op))


def _migration_context(
    conn: sa.Connection, structure: TableStructure, metadata: sa.MetaData, *, absent: bool
) -> MigrationContext:
    default_schema = conn.dialect.default_schema_name
    schema = structure.schema

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            # a table the target lacks: no schema is reflected (its table is created). Else
            # Alembic, finding no table of that name, reflects every table of the schema
            # (an empty name filter is no filter): quadratic in the tables of a first sync
            if absent:
                return False
            return name == schema or (name is None and schema in (None, default_schema))
        if type_ == "table":
            return name == structure.name
        return True

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        # The metadata also holds stub tables standing for the tables this one references;
        # include_name only filters reflected names, so without this every referenced table
        # the target has would be "created" again (and fail: relation already exists).
        if type_ == "table" and not reflected:
            return bool(obj.name == structure.name and obj.schema == structure.schema)
        return True

    from alembic.runtime.migration import MigrationContext

    setup_alembic()
    context = MigrationContext.configure(
        connection=conn,
        opts={
            "target_metadata": metadata,
            "compare_type": compare_type,
            "compare_server_default": compare_default,
            "include_name": include_name,
            "include_object": include_object,
            "include_schemas": schema not in (None, default_schema),
            "autogenerate_plugins": ["alembic.autogenerate.*", PLUGIN],
        },
    )
    # Instead of Alembic's PostgreSQL hook, which drops a serial column's default after looking
    # its sequence up by the literal's text (quotes still doubled: fails for "it's_id_seq").
    context.impl.autogen_column_reflect = _catalog_column_reflect(conn)  # type: ignore[method-assign]
    return context


def _catalog_column_reflect(conn: sa.Connection) -> Callable[[Any, sa.Table, Any], None]:
    """A ``column_reflect`` hook: the target column's own NOT NULL and default, from the catalog.

    SQLAlchemy gives a column of a domain the domain's default and NOT NULL; comparing those
    with the source's (read from the catalog, :func:`catalog.reflect_tables`) would add or lose a default.
    """
    facts: dict[tuple[str | None, str], dict[str, tuple[bool, str | None]]] = {}

    def hook(inspector: Any, table: sa.Table, column_info: Any) -> None:
        key = (table.schema, table.name)
        if key not in facts:
            facts[key] = column_facts(conn, table.schema, table.name)
        found = facts[key].get(column_info["name"])
        if found is None:
            return
        not_null, default = found
        column_info["nullable"] = not not_null
        if not column_info.get("computed") and not column_info.get("identity"):
            column_info["default"] = default

    return hook


def _in_default_schema(structure: TableStructure, default_schema: str | None) -> TableStructure:
    """``structure`` with the connection's default schema left implicit, as Alembic reflects it.

    Alembic compares a default-schema table with schema None and reflects its foreign keys
    with ``referred_schema`` None; a metadata table naming ``public`` explicitly would differ
    from the target in every foreign key (dropped and created again on each run).
    """
    if structure.schema not in (None, default_schema):
        return structure
    foreign_keys = tuple(
        fk.model_copy(update={"referred_schema": None})
        if fk.referred_schema == default_schema
        else fk
        for fk in structure.foreign_keys
    )
    return structure.model_copy(update={"schema_": None, "foreign_keys": foreign_keys})


def diff_table(
    conn: sa.Connection, structure: TableStructure, *, allow_drop: bool = False
) -> SchemaDiff:
    """What the target needs so that ``structure``'s table matches the source's.

    Destructive operations (dropping columns, indexes, constraints) are left out unless
    ``allow_drop``; they are reported in ``skipped`` so the caller can warn.
    """
    structure = _in_default_schema(structure, conn.dialect.default_schema_name)
    metadata = sa.MetaData()
    to_table(structure, metadata)  # with stubs of the tables its foreign keys refer to
    from alembic.autogenerate import produce_migrations
    from alembic.operations import ops as alembic_ops

    absent = conn.execute(
        sa.text("SELECT to_regclass(format('%I.%I', CAST(:s AS text), CAST(:t AS text))) IS NULL"),
        {"s": structure.schema or conn.dialect.default_schema_name, "t": structure.name},
    ).scalar()
    context = _migration_context(conn, structure, metadata, absent=bool(absent))
    script = produce_migrations(context, metadata)
    upgrade_ops = script.upgrade_ops
    assert upgrade_ops is not None
    diff = SchemaDiff(table=structure.name)
    for op in _walk(upgrade_ops.ops):
        if isinstance(op, alembic_ops.DropTableOp):
            continue  # never: only stub tables for FK targets could show up here
        change = _describe(op)
        if change.destructive and not allow_drop:
            diff.skipped.append(change)
            continue
        if isinstance(op, alembic_ops.AlterColumnOp) and op.modify_type is not None:
            op.kw["postgresql_using"] = (
                sql.SQL("{}::{}")
                .format(ddl_name(None, op.column_name), sql.SQL(type_text(op.modify_type)))
                .as_string(None)
            )
        if isinstance(op, alembic_ops.CreateTableOp):
            diff.creates_table = True
        diff.ops.append(op)
        diff.changes.append(change)
    return diff


def defer_keys(
    diff: SchemaDiff,
) -> tuple[list[alembic_ops.MigrateOperation], list[alembic_ops.MigrateOperation]]:
    """Split a new table's creation as ``pg_restore`` orders it, for a load in between.

    ``diff.ops`` keeps the table without its primary key, unique constraints and foreign keys
    (columns, NOT NULL, defaults, CHECK constraints and comments stay); returned are the
    operations to run after the rows are loaded: the keys, unique constraints and indexes
    (Alembic's own ``CreateIndexOp``\\ s), then the foreign keys. Still Alembic's operations:
    its ``CreateTableOp`` without those constraints and an ``AddConstraintOp`` for each.
    """
    from alembic.operations import ops as alembic_ops

    keys: list[alembic_ops.MigrateOperation] = []
    foreign: list[alembic_ops.MigrateOperation] = []
    now: list[alembic_ops.MigrateOperation] = []
    for op in diff.ops:
        if isinstance(op, alembic_ops.CreateIndexOp):
            keys.append(op)
            continue
        if not isinstance(op, alembic_ops.CreateTableOp):
            now.append(op)
            continue
        kept: list[Any] = []
        # a table's constraints are a set: in a stable order (the key, then by name)
        for item in sorted(op.columns, key=_constraint_order):
            if isinstance(item, (sa.PrimaryKeyConstraint, sa.UniqueConstraint)) and item.columns:
                keys.append(alembic_ops.AddConstraintOp.from_constraint(item))
            elif isinstance(item, sa.ForeignKeyConstraint):
                foreign.append(add_foreign_key_op(item))
            elif isinstance(item, sa.Column):
                column = item._copy()
                column.primary_key = False  # else the table is created with its key again
                kept.append(column)
            else:
                kept.append(item)
        now.append(
            alembic_ops.CreateTableOp(
                op.table_name,
                kept,
                schema=op.schema,
                _namespace_metadata=op._namespace_metadata,
                _constraints_included=op._constraints_included,
                comment=op.comment,
                info=op.info,
                prefixes=op.prefixes,
                **op.kw,
            )
        )
    diff.ops = now
    return keys, foreign


def _constraint_order(item: Any) -> tuple[int, str]:
    if isinstance(item, sa.Column):
        return (0, "")  # columns keep their order (the sort is stable)
    if isinstance(item, sa.PrimaryKeyConstraint):
        return (1, "")
    return (2, str(item.name or ""))
