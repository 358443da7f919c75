"""Row and structure fingerprints: know, before mapping, which tables already equal the source's.

``create`` records a :class:`RowFingerprint` of each data table in the migration file (taken in
the file's own snapshot); ``prepare`` computes the same on the target and leaves a table whose
rows, structure and sequences already match — for its rule — out of the mapped units.

The row checksum extends the backups' (``backup.fingerprints.table_fingerprints``): the exact sum of a
64-bit ``hashtextextended`` of each row's text, computed twice with two seeds (0 and 1), plus
the row count. It is independent of row order, sensitive to duplicates, and costs one scan
and no sort. Two tables with different contents get the same fingerprint only if both 64-bit
sums collide at once (about 2^-128 for data not crafted to collide): "unchanged" is never
wrong in practice. It is not a cryptographic hash and is not meant to resist rows made on
purpose to collide.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from migration_manager import pg
from migration_manager.config import INSERT_IGNORE, OVERWRITE, UPSERT
from migration_manager.manifest import METHOD, RowFingerprint

MAX_BYTES_ENV = "MM_FINGERPRINT_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# upsert / insert-ignore: up to this many rows, the file lists each source row's (key's) hash,
# so a target holding extra rows can still be found unchanged
MAX_LISTED_ROWS = 20_000


def max_bytes() -> int:
    """Tables larger than this (``MM_FINGERPRINT_MAX_BYTES``, default 64 MiB) get no fingerprint."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    try:
        return int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


def table_sizes(cur: psycopg.Cursor[Any], schema: str) -> dict[str, int]:
    """Bytes of each table's main fork in ``schema`` (what a fingerprint has to scan)."""
    with cur.connection.cursor(row_factory=dict_row) as named:
        rows = named.execute(
            "SELECT c.relname, pg_relation_size(c.oid) AS size FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        ).fetchall()
    return {str(r["relname"]): int(r["size"]) for r in rows}


def _listed_columns(rule: str, columns: Sequence[str], key: Sequence[str]) -> Sequence[str] | None:
    if rule == UPSERT:
        return columns
    if rule == INSERT_IGNORE and key:
        return key
    return None


def _rows_of(schema: str, table: str, columns: Sequence[str]) -> sql.Composable:
    return sql.SQL("(SELECT {} FROM {}) AS mm_row_").format(
        pg.ident_list(list(columns)), pg.qualified(schema, table)
    )


def _hashes(cur: psycopg.Cursor[Any], schema: str, table: str, columns: Sequence[str]) -> list[int]:
    query = sql.SQL("SELECT hashtextextended(mm_row_::text, 0) FROM {}").format(
        _rows_of(schema, table, columns)
    )
    return [int(r[0]) for r in cur.execute(query).fetchall()]


def row_fingerprint(
    cur: psycopg.Cursor[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    *,
    rule: str = OVERWRITE,
    key: Sequence[str] = (),
) -> RowFingerprint:
    """The fingerprint of ``table``'s ``columns``, in the cursor's transaction (and snapshot)."""
    pg.stable_text_output(cur)
    row = cur.execute(
        sql.SQL(
            "SELECT count(*), "
            "coalesce(sum(hashtextextended(mm_row_::text, 0)::numeric), 0)::text, "
            "coalesce(sum(hashtextextended(mm_row_::text, 1)::numeric), 0)::text FROM {}"
        ).format(_rows_of(schema, table, columns))
    ).fetchone()
    assert row is not None
    rows = int(row[0])
    listed_columns = _listed_columns(rule, columns, key)
    listed = None
    if listed_columns is not None and rows <= MAX_LISTED_ROWS:
        listed = tuple(sorted(_hashes(cur, schema, table, listed_columns)))
    return RowFingerprint(rows=rows, sum0=str(row[1]), sum1=str(row[2]), listed=listed)


def rows_unchanged(
    cur: psycopg.Cursor[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    rule: str,
    source: RowFingerprint,
    *,
    target: RowFingerprint | None = None,
) -> str | None:
    """Why the target's rows need nothing under ``rule`` (None: the unit has row work to do).

    overwrite: the same rows. upsert: every source row present identically (extra target rows
    stay). insert-ignore: every source key present. Same rows always means unchanged.
    ``target``: the target's fingerprint of ``columns`` when already taken (not scanned again).
    """
    if source.method != METHOD:
        return None
    scanned = target is None
    if target is None:
        target = row_fingerprint(cur, schema, table, columns)
    if target.same_rows(source):
        return f"same rows as the source ({source.rows}; fingerprint equal)"
    listed_columns = _listed_columns(rule, columns, key)
    if listed_columns is None or source.listed is None:
        return None
    if target.rows > 10 * MAX_LISTED_ROWS:
        return None  # too many target rows to list cheaply: let the unit compare them
    if not scanned:  # row text as row_fingerprint prints it (the listed hashes need it)
        pg.stable_text_output(cur)
    present = set(_hashes(cur, schema, table, listed_columns))
    if not all(h in present for h in source.listed):
        return None
    extra = target.rows - source.rows
    if rule == UPSERT:
        return (
            f"every source row ({source.rows}) is in the target identically; "
            f"{extra} more target row(s) stay under upsert"
        )
    return f"every source key ({source.rows}) is in the target; insert-ignore inserts nothing"
