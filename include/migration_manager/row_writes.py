"""How each rule writes rows. One place per rule; SQL built with ``psycopg.sql`` only.

All functions run inside the unit's transaction on a psycopg connection. Rows are compared as
the text of a row of the source's columns, which works for every type (``json`` has no
equality operator) and treats two rows as equal exactly when PostgreSQL prints them the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from migration_manager import pg
from migration_manager.digest import CHUNK
from migration_manager.progress import Progress

if TYPE_CHECKING:
    from migration_manager.manifest import Table

log = logging.getLogger(__name__)


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    statements: list[str] = field(default_factory=list)  # data statements' shapes, no values
    # up to SAMPLE_KEYS primary-key values per kind, as text: never whole rows, never values
    inserted_keys: list[str] = field(default_factory=list)
    updated_keys: list[str] = field(default_factory=list)
    deleted_keys: list[str] = field(default_factory=list)

    def add_keys(self, kind: str, keys: list[str] | None) -> None:
        """Add ``kind``'s keys (each statement returns its smallest), keeping ``SAMPLE_KEYS``."""
        have: list[str] = getattr(self, f"{kind}_keys")
        have.extend(k for k in keys or () if k not in have)
        del have[SAMPLE_KEYS:]


SAMPLE_KEYS = 20  # sample keys kept per kind (inserted / updated / deleted) and table


@dataclass(frozen=True)
class Target:
    """One table as the rules see it: where it is, its source columns, its key."""

    schema: str
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    rows: int
    raw_bytes: int | None = None

    @property
    def ident(self) -> sql.Composable:
        return pg.qualified(self.schema, self.name)

    @classmethod
    def of(cls, entry: Table) -> Target | None:
        """The manifest entry's table with the file's rows for it (None: the file has none)."""
        if entry.data is None:
            return None
        return cls(
            schema=entry.structure.schema or "public",
            name=entry.name,
            columns=tuple(entry.data.columns),
            key=entry.structure.primary_key,
            rows=entry.data.rows,
            raw_bytes=entry.data.raw_bytes,
        )


def _run(
    cur: psycopg.Cursor[Any], counts: Counts, query: sql.Composed, params: Any = None
) -> psycopg.Cursor[Any]:
    counts.statements.append(query.as_string(cur.connection))
    return cur.execute(query, params)


def copy_in(
    cur: psycopg.Cursor[Any],
    counts: Counts,
    into: sql.Composable,
    t: Target,
    stream: IO[bytes],
    what: str,
) -> int:
    """Stream a binary COPY from ``stream`` into ``into``; returns rows loaded."""
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        into, pg.ident_list(t.columns)
    )
    counts.statements.append(query.as_string(cur.connection))
    progress = Progress(what, t.rows, log, expected_bytes=t.raw_bytes)
    with cur.copy(query) as copy:
        while chunk := stream.read(CHUNK):
            copy.write(chunk)
            progress.add_bytes(len(chunk))
    rows = cur.rowcount
    progress.done(rows)
    return rows


def is_empty(cur: psycopg.Cursor[Any], t: Target) -> bool:
    row = cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(t.ident)).fetchone()
    return bool(row and row[0])


def stage(
    cur: psycopg.Cursor[Any], counts: Counts, t: Target, stream: IO[bytes], name: str
) -> sql.Identifier:
    """Load the source rows into a temporary table shaped like the target's source columns."""
    stage_ident = sql.Identifier(name)
    _run(
        cur,
        counts,
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            stage_ident, pg.ident_list(t.columns), t.ident
        ),
    )
    copy_in(cur, counts, stage_ident, t, stream, f"load {t.name}")
    # Statistics for the planner. With a key, the stage is only joined on the key
    # (delete_missing) or scanned whole (upsert), so only the key columns' statistics are
    # ever used (the row count comes with any ANALYZE); the other columns' cost time only.
    if t.key:
        cur.execute(sql.SQL("ANALYZE {} ({})").format(stage_ident, pg.ident_list(t.key)))
    else:
        cur.execute(sql.SQL("ANALYZE {}").format(stage_ident))
    return stage_ident


def row_text(alias: str, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("ROW({})::text").format(pg.ident_list(columns, alias))


def _rows_differ(a: str, b: str, columns: tuple[str, ...]) -> sql.Composable:
    """Whether the rows ``a`` and ``b`` print differently (same semantics as comparing
    ``_row_text``), cheaply for the common case of identical rows.

    ``record_image_eq`` compares the two records' stored bytes column by column (detoasted,
    NULL equal to NULL, no equality operator needed, so ``json`` works too). Identical bytes
    print identically, so when it is true the rows are equal and their texts need not be
    built; only rows whose bytes differ (changed rows, or e.g. ``1.0`` vs ``1.00``) pay for
    the text comparison, which still decides. Both sides must have the same column types
    (``record_image_eq`` raises otherwise), which holds where it is used: ``d`` and
    ``EXCLUDED`` are both rows of the target table.
    """
    return sql.SQL(
        "record_image_eq(ROW({}), ROW({})) IS NOT TRUE AND {} IS DISTINCT FROM {}"
    ).format(
        pg.ident_list(columns, a),
        pg.ident_list(columns, b),
        row_text(a, columns),
        row_text(b, columns),
    )


def key_match(a: str, b: str, key: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(a), sql.Identifier(k), sql.Identifier(b), sql.Identifier(k)
        )
        for k in key
    )


def key_of(alias: str, key: tuple[str, ...]) -> sql.Composable:
    """The row's key as one value: the column itself, or a ROW of the key columns (ordered
    column by column, printed ``(1,a)``)."""
    cols = pg.ident_list(key, alias)
    return cols if len(key) == 1 else sql.SQL("ROW({})").format(cols)


def sample_sql(source: str, where: sql.Composable | None = None) -> sql.Composable:
    """An array of the smallest ``SAMPLE_KEYS`` keys (``mm_key``) of the CTE ``source``, as text.

    A top-N sort over the rows the statement returned anyway: no second pass over the table.
    """
    # ORDER BY the returned key (qualified: the bare name would be the text output column)
    return sql.SQL(
        "ARRAY(SELECT {s}.mm_key::text FROM {s} {where} ORDER BY {s}.mm_key LIMIT {n})"
    ).format(
        s=sql.Identifier(source),
        where=sql.SQL("WHERE {}").format(where) if where is not None else sql.SQL(""),
        n=sql.Literal(SAMPLE_KEYS),
    )


def sample_table_keys(cur: psycopg.Cursor[Any], counts: Counts, t: Target, kind: str) -> None:
    """Sample keys of the whole table (rows just copied into an empty table are all new)."""
    if not t.key:
        return
    query = sql.SQL("SELECT ARRAY(SELECT {k}::text FROM {t} AS d ORDER BY {k} LIMIT {n})").format(
        k=key_of("d", t.key), t=t.ident, n=sql.Literal(SAMPLE_KEYS)
    )
    row = cur.execute(query).fetchone()
    counts.add_keys(kind, row[0] if row else None)


def delete_missing(
    cur: psycopg.Cursor[Any], counts: Counts, t: Target, stage_ident: sql.Identifier
) -> None:
    """Delete target rows whose key the source no longer has."""
    query = sql.SQL(
        "WITH r AS (DELETE FROM {} AS d WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE {}) "
        "RETURNING {} AS mm_key) SELECT count(*), {} FROM r"
    ).format(t.ident, stage_ident, key_match("s", "d", t.key), key_of("d", t.key), sample_sql("r"))
    row = _run(cur, counts, query).fetchone()
    assert row is not None
    counts.deleted += int(row[0])
    counts.add_keys("deleted", row[1])


def upsert(
    cur: psycopg.Cursor[Any],
    counts: Counts,
    t: Target,
    stage_ident: sql.Identifier,
    *,
    update: bool,
    total: int,
) -> None:
    """INSERT ... ON CONFLICT (key): update rows that differ (or leave them), insert new ones."""
    non_key = tuple(c for c in t.columns if c not in t.key)
    if update and non_key:
        action = sql.SQL("DO UPDATE SET {} WHERE {}").format(
            sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in non_key
            ),
            _rows_differ("d", "excluded", non_key),
        )
    else:
        action = sql.Composed([sql.SQL("DO NOTHING")])
    query = sql.SQL(
        "WITH r AS (INSERT INTO {} AS d ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} "
        "ON CONFLICT ({}) {} RETURNING (d.xmax = 0) AS inserted, {} AS mm_key) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), {}, {} "
        "FROM r"
    ).format(
        t.ident,
        pg.ident_list(t.columns),
        pg.ident_list(t.columns),
        stage_ident,
        pg.ident_list(t.key),
        action,
        key_of("d", t.key),
        sample_sql("r", sql.SQL("inserted")),
        sample_sql("r", sql.SQL("NOT inserted")),
    )
    row = _run(cur, counts, query).fetchone()
    assert row is not None
    inserted, updated = int(row[0]), int(row[1])
    counts.add_keys("inserted", row[2])
    counts.add_keys("updated", row[3])
    counts.inserted += inserted
    counts.updated += updated
    counts.unchanged += total - inserted - updated


def delete_all(cur: psycopg.Cursor[Any], counts: Counts, t: Target) -> int:
    if not t.key:  # no key to sample: a row's values are never logged
        return _run(cur, counts, sql.SQL("DELETE FROM {}").format(t.ident)).rowcount
    query = sql.SQL(
        "WITH r AS (DELETE FROM {} AS d RETURNING {} AS mm_key) SELECT count(*), {} FROM r"
    ).format(t.ident, key_of("d", t.key), sample_sql("r"))
    row = _run(cur, counts, query).fetchone()
    assert row is not None
    counts.add_keys("deleted", row[1])
    return int(row[0])


def insert_all(
    cur: psycopg.Cursor[Any], counts: Counts, t: Target, stage_ident: sql.Identifier
) -> int:
    query = sql.SQL("INSERT INTO {} AS d ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
        t.ident, pg.ident_list(t.columns), pg.ident_list(t.columns), stage_ident
    )
    if not t.key:
        return _run(cur, counts, query).rowcount
    query = sql.SQL("WITH r AS ({} RETURNING {} AS mm_key) SELECT count(*), {} FROM r").format(
        query, key_of("d", t.key), sample_sql("r")
    )
    row = _run(cur, counts, query).fetchone()
    assert row is not None
    counts.add_keys("inserted", row[1])
    return int(row[0])


def same_rows(cur: psycopg.Cursor[Any], t: Target, stage_ident: sql.Identifier) -> bool:
    """Whether target and stage hold the same multiset of rows (for tables without a key)."""
    q = sql.SQL(
        "SELECT NOT EXISTS (SELECT {a} FROM {s} AS s EXCEPT ALL SELECT {b} FROM {t} AS d) "
        "AND NOT EXISTS (SELECT {b} FROM {t} AS d EXCEPT ALL SELECT {a} FROM {s} AS s)"
    ).format(a=row_text("s", t.columns), b=row_text("d", t.columns), s=stage_ident, t=t.ident)
    row = cur.execute(q).fetchone()
    return bool(row and row[0])


def count_rows(cur: psycopg.Cursor[Any], t: Target) -> int:
    row = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(t.ident)).fetchone()
    return int(row[0]) if row else 0
