"""Compare two databases exactly: ``pg_dump -s`` of their schemas, every row, every sequence."""

from __future__ import annotations

import subprocess
from typing import Any

import psycopg
from psycopg import sql

from migration_manager.backup.tools import find_tool

_SKIP = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")


def schema_dump(dsn: str) -> list[str]:
    """``pg_dump -s`` without comments, settings and the dump's random restrict key."""
    with psycopg.connect(dsn) as conn:
        database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
    out = subprocess.run(
        [str(find_tool("pg_dump").path), "-s", "--no-owner", "-d", dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [
        line.replace(database, "<db>")
        for line in out.splitlines()
        if line.strip() and not line.startswith(_SKIP)
    ]


def user_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema' ORDER BY 1"
            )
        ]


def contents(dsn: str) -> dict[str, Any]:
    """Every table's rows (as text, sorted) and every sequence's state, by qualified name."""
    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'S') "
            "AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1, 2"
        ).fetchall()
        for schema, name, kind in tables:
            ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            if kind == "S":
                query = sql.SQL("SELECT last_value, is_called FROM {}").format(ident)
                out[f"sequence {schema}.{name}"] = conn.execute(query).fetchone()
            else:
                query = sql.SQL("SELECT t::text FROM {} AS t ORDER BY 1").format(ident)
                out[f"table {schema}.{name}"] = [r[0] for r in conn.execute(query)]
    return out


def roles(pattern: str) -> list[str]:
    """Roles whose name is LIKE ``pattern`` (server-wide)."""
    from tests.pgtools import PG_URL

    with psycopg.connect(PG_URL) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY 1", (pattern,)
            )
        ]


def assert_same(source: str, target: str, rows_differ: tuple[tuple[str, str], ...] = ()) -> None:
    """Source and target hold the same schemas, structure (``pg_dump -s``), rows and sequences;
    ``rows_differ`` names (schema, table) pairs whose rows the rules keep apart on purpose."""
    assert user_schemas(target) == user_schemas(source)
    assert schema_dump(target) == schema_dump(source)
    skip = {f"table {schema}.{name}" for schema, name in rows_differ}
    theirs = {k: v for k, v in contents(source).items() if k not in skip}
    ours = {k: v for k, v in contents(target).items() if k not in skip}
    assert ours == theirs
