"""Connections and small SQL helpers shared by the engine."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.pool import NullPool

from migration_manager.errors import TransientError

log = logging.getLogger(__name__)

_PASSWORD_IN_URI = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(dsn: str) -> str:
    """A connection string safe to print: the password is replaced by ``***``."""
    dsn = _PASSWORD_IN_URI.sub(r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def connect(
    dsn: str, *, autocommit: bool = False, application_name: str = "migration-manager"
) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, application_name=application_name)
    except psycopg.OperationalError as exc:
        # libpq's message names host and database, never the password.
        raise TransientError(
            f"Cannot connect to PostgreSQL ({redact(dsn)}): {exc}".strip()
        ) from exc


def sa_engine(dsn: str) -> sa.Engine:
    """A SQLAlchemy engine on psycopg 3 that opens plain libpq connections from ``dsn``."""
    return sa.create_engine(
        "postgresql+psycopg://", creator=lambda: connect(dsn), poolclass=NullPool
    )


@contextlib.contextmanager
def sa_connection(dsn: str) -> Iterator[sa.Connection]:
    engine = sa_engine(dsn)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def qualified(schema: str | None, name: str) -> sql.Composable:
    if schema:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
    return sql.Identifier(name)


def run_one(conn: psycopg.Connection[Any], statement: str | sql.Composable) -> None:
    """Run exactly one SQL statement in ``conn``'s current transaction.

    It is sent with the extended query protocol (``binary=True`` forces it even without
    parameters), which PostgreSQL refuses for more than one statement ("cannot insert multiple
    commands into a prepared statement"): text that comes from a migration file (a default, a
    type, a check) can never smuggle in a ``COMMIT`` or a second command.
    """
    with conn.cursor() as cur:
        cur.execute(statement, binary=True)


@contextlib.contextmanager
def single_statements(conn: sa.Connection) -> Iterator[None]:
    """While inside, every statement ``conn`` executes goes through :func:`run_one`'s protocol.

    For DDL that SQLAlchemy/Alembic render (identifiers quoted by SQLAlchemy, expressions from
    the migration file as text): one statement per execute, never more.
    """
    engine = conn.engine

    def with_params(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        cursor.execute(statement, parameters or None, binary=True)
        return True

    def without_params(cursor: Any, statement: str, context: Any) -> bool:
        cursor.execute(statement, binary=True)
        return True

    sa.event.listen(engine, "do_execute", with_params)
    sa.event.listen(engine, "do_execute_no_params", without_params)
    try:
        yield
    finally:
        sa.event.remove(engine, "do_execute", with_params)
        sa.event.remove(engine, "do_execute_no_params", without_params)


def ident_list(names: list[str] | tuple[str, ...], prefix: str | None = None) -> sql.Composable:
    if prefix:
        return sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(n)) for n in names
        )
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def server_version(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0]).split()[0]
