"""Sequences past the largest id: what a unit runs on them, what the plan expects it to run."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.rows import DictRow, dict_row

from migration_manager import pg, row_writes
from migration_manager.config import DATA_RULES
from migration_manager.schema import (
    SequenceStructure,
    TableStructure,
    ensure_sequences,
    own_sequences,
)


def sequence_work(conn: sa.Connection, structure: TableStructure, rule: str) -> list[str]:
    """The sequence statements ``apply_unit`` would run on this table (nothing is executed)."""
    planned: list[str] = []
    ensure_sequences(conn, structure, planned.append)
    own_sequences(conn, structure, planned.append)
    if not planned:
        raw = conn.connection.driver_connection
        assert raw is not None
        counts = row_writes.Counts()
        with raw.cursor() as cur:
            fix_sequences(cur, structure, rule, counts, execute=False)
        planned = list(counts.statements)
    return [f"sequence: {stmt}" for stmt in planned]


def fix_sequences(
    cur: psycopg.Cursor[Any],
    structure: TableStructure,
    rule: str,
    counts: row_writes.Counts,
    *,
    execute: bool = True,
) -> None:
    """Move each sequence of the table past the largest id (and past the source's value after a load).

    ``execute=False`` only records the statements it would run (``prepare``'s check).
    """
    schema = structure.schema or "public"
    # the catalog's rows read by name, in the unit's transaction
    with cur.connection.cursor(row_factory=dict_row) as named:
        for seq in structure.sequences:
            if seq.column is None:
                continue
            wanted = _past(named, schema, structure, seq, rule)
            if wanted is None:
                continue
            query = sql.SQL("SELECT setval({}, {}, true)").format(
                sql.Literal(wanted[0]), sql.Literal(wanted[1])
            )
            counts.statements.append(query.as_string(cur.connection))
            if execute:
                cur.execute(query)


def _past(
    cur: psycopg.Cursor[DictRow],
    schema: str,
    structure: TableStructure,
    seq: SequenceStructure,
    rule: str,
) -> tuple[str, int] | None:
    """The sequence (its regclass text) and the value it must reach; None: it is past already."""
    row = cur.execute(
        "SELECT pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), %s) AS seq",
        (schema, structure.name, seq.column),
    ).fetchone()
    seq_name = row["seq"] if row and row["seq"] else None
    if seq_name is None:
        seq_name = (
            sql.SQL("{}")
            .format(pg.qualified(seq.schema or schema, seq.name))
            .as_string(cur.connection)
        )
    m = cur.execute(
        sql.SQL("SELECT max({})::bigint AS largest FROM {}").format(
            sql.Identifier(str(seq.column)), pg.qualified(schema, structure.name)
        )
    ).fetchone()
    candidates = [m["largest"] if m else None]
    if rule in DATA_RULES:
        candidates.append(seq.last_value)
    values = [v for v in candidates if v is not None]
    if not values:
        return None
    wanted = max(values)
    # the sequence by its regclass text, never pasted into SQL; NULL: nextval not yet called
    last = cur.execute(
        "SELECT pg_sequence_last_value(%s::regclass) AS last_value, "
        "(SELECT seqstart FROM pg_sequence WHERE seqrelid = %s::regclass) AS start_value",
        (seq_name, seq_name),
    ).fetchone()
    assert last is not None
    if last["last_value"] is not None and last["last_value"] >= wanted:
        return None
    if last["last_value"] is None and last["start_value"] > wanted:
        return None
    return seq_name, wanted
