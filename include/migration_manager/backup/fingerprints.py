"""Table fingerprints of a backup: each user table's row count and order-independent content checksum.

A backup records one per table, taken in the dump's own snapshot; a restore is verified by
comparing them again (:func:`compare_fingerprints`). These are whole-table checksums of the
database as ``pg_dump`` sees it; the migration file's row fingerprints (which tables already
equal the source's) are :mod:`migration_manager.fingerprint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from migration_manager import pg

Fingerprint = tuple[int, str]  # (rows, content checksum)

# user schemas: neither the catalogs nor information_schema
USER_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"


def _user_tables(cur: psycopg.Cursor[Any], schema: str | None) -> list[tuple[str, str]]:
    query = sql.SQL("""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND {user_schema}
          AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s::text)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
    """).format(user_schema=sql.SQL(USER_SCHEMA))
    with cur.connection.cursor(row_factory=dict_row) as named:
        rows = named.execute(query, {"schema": schema}).fetchall()
    return [(r["nspname"], r["relname"]) for r in rows]


def fingerprints_in(cur: psycopg.Cursor[Any], schema: str | None) -> dict[str, Fingerprint]:
    """:func:`table_fingerprints` in the cursor's current transaction (and snapshot)."""
    pg.stable_text_output(cur)
    out: dict[str, Fingerprint] = {}
    for nsp, name in _user_tables(cur, schema):
        row = cur.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(hashtextextended(mm_row_::text, 0)::numeric), 0)::text "
                "FROM {} AS mm_row_"
            ).format(pg.qualified(nsp, name))
        ).fetchone()
        assert row is not None
        out[f"{nsp}.{name}"] = (int(row[0]), str(row[1]))
    return out


def table_fingerprints(
    source: str | psycopg.Connection[Any], schema: str | None = None
) -> dict[str, Fingerprint]:
    """Row count and content checksum of every table (of ``schema``, or of every user schema).

    The checksum is the sum of a 64-bit hash of each row's text: cheap (one scan, no sort),
    independent of row order, and sensitive to duplicates. Keys are ``schema.table``. Given a
    connection, it runs in that connection's current transaction (and snapshot).
    """
    if isinstance(source, psycopg.Connection):
        with source.cursor() as cur:
            return fingerprints_in(cur, schema)
    with pg.connect(source) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.cursor() as cur:
            result = fingerprints_in(cur, schema)
        conn.rollback()
    return result


def compare_fingerprints(
    expected: Mapping[str, Fingerprint], actual: Mapping[str, Fingerprint]
) -> list[str]:
    """What differs, one line per table (empty: identical)."""
    problems = [f"{t}: missing (the backup has it)" for t in sorted(set(expected) - set(actual))]
    problems += [f"{t}: present but not in the backup" for t in sorted(set(actual) - set(expected))]
    for t in sorted(set(expected) & set(actual)):
        (er, ec), (ar, ac) = expected[t], actual[t]
        if er != ar:
            problems.append(f"{t}: {ar} rows, the backup has {er}")
        elif ec != ac:
            problems.append(f"{t}: same row count ({ar}) but different content")
    return problems


def user_schemas(cur: psycopg.Cursor[Any]) -> list[str]:
    """The database's user schemas (not those an extension owns), by name."""
    rows = cur.execute(
        sql.SQL("""
        SELECT n.nspname FROM pg_namespace n WHERE {user_schema}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                          AND d.objid = n.oid AND d.deptype = 'e')
        ORDER BY 1
        """).format(user_schema=sql.SQL(USER_SCHEMA))
    ).fetchall()
    return [r[0] for r in rows]
