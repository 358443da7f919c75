"""Change the target's structure: run Alembic's operations, create types and sequences.

Alembic writes the table's DDL (:func:`apply_diff`); the enums, domains and sequences the table
needs first are written here with ``psycopg.sql``, names quoted as SQLAlchemy quotes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from migration_manager import pg
from migration_manager.errors import ApplyError
from migration_manager.schema.catalog import find_type
from migration_manager.schema.comparators import setup_alembic
from migration_manager.schema.compare import SchemaDiff
from migration_manager.schema.sqltext import DIALECT, ddl_name
from migration_manager.schema.structure import create_type_sql, type_name
from migration_manager.table_structure import SequenceStructure, TableStructure

if TYPE_CHECKING:
    from alembic.operations.ops import MigrateOperation

log = logging.getLogger(__name__)


class StatementRecorder:
    """Records every statement a SQLAlchemy connection executes (the executed schema SQL)."""

    def __init__(self, conn: sa.Connection):
        self.conn = conn
        self.statements: list[str] = []

    def __enter__(self) -> StatementRecorder:
        sa.event.listen(self.conn, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.conn, "before_cursor_execute", self._record)

    def _record(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        # what the server runs: with parameters passed (even none), psycopg turns the "%%" that
        # SQLAlchemy rendered for a "%" back into "%" (see pg.single_statements)
        final = statement if parameters is None else statement.replace("%%", "%")
        self.statements.append(final.strip())


def apply_diff(conn: sa.Connection, diff: SchemaDiff) -> None:
    """Run the diff's Alembic operations; each statement alone (:func:`pg.single_statements`)."""
    run_ops(conn, diff.ops)


def run_ops(conn: sa.Connection, ops: Iterable[MigrateOperation]) -> None:
    """Run Alembic operations in order; each statement alone (:func:`pg.single_statements`)."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    setup_alembic()
    operations = Operations(MigrationContext.configure(connection=conn))
    with pg.single_statements(conn):
        for op in ops:
            operations.invoke(op)


_SEQUENCE_TYPES = ("smallint", "integer", "bigint")


def create_sequence_sql(seq: SequenceStructure) -> sql.Composed:
    """``CREATE SEQUENCE`` for ``seq``: names as identifiers, every number checked to be one."""
    if seq.data_type not in _SEQUENCE_TYPES:
        raise ApplyError(
            f"Sequence {seq.name!r}: data type {seq.data_type!r} is not one of "
            f"{', '.join(_SEQUENCE_TYPES)}; the migration file is damaged or was not written by "
            "this tool: create the migration file again",
            terminal=True,
        )
    numbers = {}
    for what in ("increment", "min_value", "max_value", "start", "cache"):
        value = getattr(seq, what)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApplyError(
                f"Sequence {seq.name!r}: {what} {value!r} is not an integer; the migration file "
                "is damaged or was not written by this tool: create the migration file again",
                terminal=True,
            )
        numbers[what] = sql.Literal(value)
    return sql.SQL(
        "CREATE SEQUENCE {} AS {} INCREMENT BY {increment} MINVALUE {min_value} "
        "MAXVALUE {max_value} START WITH {start} CACHE {cache}{cycle}"
    ).format(
        ddl_name(seq.schema, seq.name),  # SQLAlchemy's quoting, as in the other DDL
        sql.SQL(seq.data_type),
        cycle=sql.SQL(" CYCLE" if seq.cycle is True else ""),
        **numbers,
    )


def ensure_sequences(
    conn: sa.Connection, structure: TableStructure, execute: Callable[[str], None]
) -> None:
    """Create the table's non-identity sequences the target lacks (before the table needs them)."""
    for seq in structure.sequences:
        if seq.identity:
            continue
        exists = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND c.relname = :name AND n.nspname = COALESCE(:schema, current_schema())"
            ),
            {"name": seq.name, "schema": seq.schema},
        ).first()
        if exists:
            continue
        execute(create_sequence_sql(seq).as_string(conn.connection.driver_connection))


def ensure_types(
    conn: sa.Connection, structure: TableStructure, execute: Callable[[str], None]
) -> None:
    """Create the enums and domains the table's columns use that the target lacks.

    In the table's dependency order (an enum before a domain over it), in the caller's
    transaction. A type the target has is left as it is (``prepare`` compared it with the
    source's). Units applied at the same time may both miss a type: the second one's CREATE
    waits for the first to commit, fails, and then finds the type made; a savepoint keeps
    that failure from spoiling the unit's transaction.
    """
    context = conn.connection.driver_connection
    for t in structure.types:
        if find_type(conn, t.schema, t.name) is not None:
            continue
        if not conn.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": t.schema}
        ).first():
            execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                .format(sql.SQL(DIALECT.identifier_preparer.quote_schema(t.schema)))
                .as_string(context)
            )
        try:
            with conn.begin_nested():
                execute(create_type_sql(t, context))
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            raced = isinstance(
                orig, (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject)
            )
            if not raced or find_type(conn, t.schema, t.name) is None:
                raise
            log.info(
                "%s: type %s was created meanwhile by another unit", structure.name, type_name(t)
            )


def own_sequences(
    conn: sa.Connection, structure: TableStructure, execute: Callable[[str], None]
) -> None:
    """``ALTER SEQUENCE ... OWNED BY`` for sequences the source ties to a column and the target does not."""
    for seq in structure.sequences:
        if seq.identity or seq.column is None:
            continue
        owned = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
                "JOIN pg_namespace n ON n.oid = s.relnamespace "
                "WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'a' AND s.relname = :name "
                "AND n.nspname = COALESCE(:schema, current_schema())"
            ),
            {"name": seq.name, "schema": seq.schema},
        ).first()
        if owned:
            continue
        execute(
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}")
            .format(
                ddl_name(seq.schema, seq.name),  # SQLAlchemy's quoting
                ddl_name(structure.schema, structure.name),
                ddl_name(None, seq.column),
            )
            .as_string(conn.connection.driver_connection)
        )
