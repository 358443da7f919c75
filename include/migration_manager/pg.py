"""Connections and small SQL helpers shared by the engine."""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from sqlalchemy.pool import NullPool

from migration_manager.db_identity import DatabaseIdentity
from migration_manager.errors import TransientError
from migration_manager.redaction import redact

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Endpoint:
    """Where a connection string leads: server addresses, port and database."""

    hosts: frozenset[str]
    port: int
    database: str
    shown: str  # "database prod on db.example:5432"


_LOCAL = frozenset({"local"})


def endpoint(dsn: str) -> Endpoint:
    """The server and database ``dsn`` names, resolved (libpq defaults filled in, names looked up).

    ``localhost``, loopback addresses and Unix sockets all mean this machine; other host names
    stand for the addresses they resolve to, so two names of one server compare equal.
    """
    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or os.environ.get("PGHOST") or "")
    port = int(str(info.get("port") or os.environ.get("PGPORT") or 5432).split(",")[0])
    user = str(info.get("user") or os.environ.get("PGUSER") or getpass.getuser())
    database = str(info.get("dbname") or os.environ.get("PGDATABASE") or user)
    first = host.split(",")[0]
    hosts: frozenset[str]
    if not first or first.startswith("/") or first.lower() == "localhost":
        hosts = _LOCAL
    else:
        try:
            found = {
                str(a[4][0]) for a in socket.getaddrinfo(first, port, proto=socket.IPPROTO_TCP)
            }
        except OSError:
            found = {first.lower()}
        hosts = frozenset(
            "local" if ipaddress.ip_address(h.split("%")[0]).is_loopback else h
            for h in found
            if _is_ip(h)
        ) or frozenset({first.lower()})
    return Endpoint(hosts, port, database, f"database {database} on {first or 'localhost'}:{port}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return True


def same_database(a: str, b: str) -> Endpoint | None:
    """The shared endpoint when ``a`` and ``b`` lead to the same database of the same server."""
    ea, eb = endpoint(a), endpoint(b)
    if ea.port == eb.port and ea.database == eb.database and ea.hosts & eb.hosts:
        return ea
    return None


def database_identity(conn: psycopg.Connection[Any]) -> DatabaseIdentity:
    """The identity of ``conn``'s database (read-only queries; usable inside a snapshot)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT d.oid::bigint AS oid, d.datname,"
            " extract(epoch FROM pg_postmaster_start_time())::text AS started,"
            " has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') AS control"
            " FROM pg_database d WHERE d.datname = current_database()"
        ).fetchone()
        assert row is not None
        system_identifier = None
        if row["control"]:
            found = cur.execute(
                "SELECT system_identifier::text FROM pg_control_system()"
            ).fetchone()
            if found and found["system_identifier"] is not None:
                system_identifier = str(found["system_identifier"])
    return DatabaseIdentity(
        system_identifier=system_identifier,
        database_oid=int(row["oid"]),
        database=str(row["datname"]),
        server_started_at=str(row["started"]),
    )


def identity_of(dsn: str) -> DatabaseIdentity:
    with connect(dsn, autocommit=True) as conn:
        return database_identity(conn)


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


def run_one(conn: psycopg.Connection[Any], statement: str | sql.Composed) -> None:
    """Run exactly one SQL statement in ``conn``'s current transaction.

    It is sent with the extended query protocol (``binary=True`` forces it even without
    parameters), which PostgreSQL refuses for more than one statement ("cannot insert multiple
    commands into a prepared statement"): text that comes from a migration file (a default, a
    type, a check) can never smuggle in a ``COMMIT`` or a second command.
    """
    with conn.cursor() as cur:
        cur.execute(statement, binary=True)


def run_composed(conn: sa.Connection, query: sql.Composable) -> sa.CursorResult[Any]:
    """Run SQL composed with psycopg.sql (names and values in it) in ``conn``'s transaction.

    As text it goes with no parameters at all: SQLAlchemy passes an empty ``{}`` otherwise, and
    psycopg then reads a '%' of a name (a DB_SCHEMA '%s', a column '50%') as a placeholder.
    """
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    text = query.as_string(raw)
    return conn.exec_driver_sql(text, execution_options={"no_parameters": True})


@contextlib.contextmanager
def single_statements(conn: sa.Connection) -> Iterator[None]:
    """While inside, every statement ``conn`` executes goes through :func:`run_one`'s protocol.

    For DDL that SQLAlchemy/Alembic render (identifiers quoted by SQLAlchemy, expressions from
    the migration file as text): one statement per execute, never more.
    """
    engine = conn.engine

    def with_params(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        # SQLAlchemy rendered the statement for a "pyformat" driver: a "%" of a name or of text
        # from the file is doubled ("%%"), which psycopg turns back into one "%" only when
        # parameters are passed, even none ({}). Passing None would create a column "%%s".
        cursor.execute(statement, parameters, binary=True)
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


# Row text prints the same on every server and session, whatever the session defaults: row
# checksums (backups, fingerprints) compare text taken on two servers, or before and after.
# One statement (a round trip per table instead of five): set_config(..., true) is SET LOCAL.
_STABLE_OUTPUT = (
    "SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true), "
    "set_config('IntervalStyle', 'postgres', true), set_config('extra_float_digits', '3', true), "
    "set_config('bytea_output', 'hex', true)"
)


def stable_text_output(cur: psycopg.Cursor[Any]) -> None:
    """Fix, for the cursor's transaction, every setting that changes how rows print as text."""
    cur.execute(_STABLE_OUTPUT)


def plan_lock_timeout() -> str:
    """How long planning waits for a table another session holds locked, to read it
    (``MM_PLAN_LOCK_TIMEOUT``, default 2s): a locked table is not compared, its unit waits."""
    value = os.environ.get("MM_PLAN_LOCK_TIMEOUT", "2s").strip()
    return value if re.fullmatch(r"[0-9]+(ms|s|min)?", value) else "2s"


def server_version(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0]).split()[0]
