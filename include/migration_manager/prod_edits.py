"""Prod edits that a migration would lose, and the target state a plan is bound to.

After each migration into a target, the fingerprint (:mod:`migration_manager.fingerprint`) of
each table with rows moved by its rule is recorded as the migration left it, per target, in a
:class:`TargetRecord` (the store keeps it as ``targets/<target key>/fingerprints.json``). At the
next plan a table whose target fingerprint differs from that record was changed in the target
since; :func:`changed_since` names those whose rule would overwrite or update rows
(``overwrite``, ``upsert``), and ``destructive.assess`` counts their rows that would be replaced.

The plan's target fingerprints also bind the plan (and an approval) to the target state it saw:
each unit checks, before it writes, that its tables still have them (``execute.apply_unit``).

A restore of a backup in place (``migration_rollback``) leaves the target as the backup was:
:func:`after_restore` records each recorded table's fingerprint as the restore left it, so the
rows the restore put back are not taken for edits made in prod.

A target fingerprint covers the target table's own columns (in column order), so a change of the
source's columns does not make every table look edited in prod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from migration_manager import pg
from migration_manager.config import OVERWRITE, UPSERT
from migration_manager.db_identity import DatabaseIdentity
from migration_manager.fingerprint import METHOD, RowFingerprint, max_bytes, row_fingerprint
from migration_manager.store_layout import safe_key

FORMAT = 1
# rules under which rows the target has would be overwritten or updated by the source's
REPLACING_RULES = (OVERWRITE, UPSERT)


def target_key(conn_id: str, identity: DatabaseIdentity) -> str:
    """The folder of a target's record: its connection id and the database's identity.

    ``<conn id>-<system_identifier>-<database OID>`` (``u<server start>`` when the role may not
    read the system identifier): the same connection id pointed at another database (a restored
    copy, a new server) starts a new record instead of comparing with another database's.
    """
    conn = safe_key(conn_id) or "target"
    server = identity.system_identifier or "u" + re.sub(
        r"[^0-9]", "", str(identity.server_started_at or "")
    )
    return f"{conn}-{server}-{identity.database_oid}"


class RecordedFingerprint(RowFingerprint):
    """A table's fingerprint as a migration left it, and which run that was."""

    run: str | None = None  # dag/run id, migration id


class TargetRecord(BaseModel):
    """Each table's fingerprint as the last migrations into a target left it (JSON as
    ``model_dump(mode="json", exclude_none=True)``)."""

    model_config = ConfigDict(frozen=True)

    format: int = FORMAT
    target_key: str = ""
    tables: dict[str, RecordedFingerprint] = {}

    def updated(self, fingerprints: Mapping[str, RowFingerprint | None], run: str) -> TargetRecord:
        """This record with ``fingerprints`` recorded (None: the table has none, forgotten)."""
        tables = dict(self.tables)
        for name, fp in fingerprints.items():
            if fp is None:
                tables.pop(name, None)
            else:
                tables[name] = RecordedFingerprint.model_validate({**dict(fp), "run": run})
        return TargetRecord(target_key=self.target_key, tables=tables)


def after_restore(
    cur: psycopg.Cursor[Any], record: TargetRecord, schema: str, run: str
) -> TargetRecord:
    """``record`` once a backup was restored into its target: each recorded table's fingerprint
    as the restore left it, by ``run`` (a table now absent or too large to scan is forgotten).

    What the restore put back is what the target holds now; edits made in prod after the
    restore are found against it, as after a migration.
    """
    found = fingerprints_of(cur, [(schema, name) for name in record.tables])
    return record.updated({name: found.get(name) for name in record.tables}, run)


def table_columns(cur: psycopg.Cursor[Any], schema: str, table: str) -> list[str] | None:
    """The table's columns in order (None: the target has no such table)."""
    found = cur.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    if found:
        return [str(r[0]) for r in found]
    exists = cur.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    return [] if exists else None


class TooLarge(Exception):
    """The table is larger than ``MM_FINGERPRINT_MAX_BYTES``: it gets no fingerprint."""


def current_fingerprint(cur: psycopg.Cursor[Any], schema: str, table: str) -> RowFingerprint | None:
    """The target table's fingerprint over its own columns, in the cursor's transaction.

    None: the table does not exist. Raises :class:`TooLarge` for a table too large to scan.
    The session settings the fingerprint needs are set in a savepoint that is rolled back, so
    the caller's transaction keeps its own.
    """
    found_table = cur.execute(  # its columns in order and its size, in one query
        "SELECT array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), pg_relation_size(c.oid) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    if found_table is None:
        return None
    columns, size = list(found_table[0]), int(found_table[1])
    if size > max_bytes():
        raise TooLarge(table)
    found: list[RowFingerprint] = []
    with cur.connection.transaction():
        found.append(row_fingerprint(cur, schema, table, columns))
        raise psycopg.Rollback()
    return found[0]


def fingerprints_of(
    cur: psycopg.Cursor[Any], tables: Iterable[tuple[str, str]]
) -> dict[str, RowFingerprint | None]:
    """``current_fingerprint`` of each ``(schema, table)``; tables too large are left out."""
    out: dict[str, RowFingerprint | None] = {}
    for schema, name in tables:
        try:
            out[name] = current_fingerprint(cur, schema, name)
        except TooLarge:
            continue
    return out


# the table as a binary COPY into it left it, column by column: name, type, whether each value
# prints as the same text on any server (under pg.stable_text_output) as on the source: not
# money (lc_monetary), the reg* types (names looked up in this database), composites, ranges
_COPIED_TABLE = """
SELECT c.relkind = 'r' AND NOT c.relrowsecurity AND NOT c.relhassubclass
       AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal)
       AND pg_relation_size(c.oid) <= %(limit)s,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
       coalesce((SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
       coalesce((SELECT bool_and(e.typtype IN ('b', 'e') AND NOT (
                     e.typnamespace = 'pg_catalog'::regnamespace
                     AND (e.typname = 'money' OR e.typname LIKE 'reg%%')))
                 FROM pg_attribute a
                 JOIN pg_type t ON t.oid = a.atttypid
                 JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
                 JOIN pg_type e ON e.oid = CASE WHEN b.typcategory = 'A' THEN b.typelem ELSE b.oid END
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), false)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s
"""


def copied_fingerprint(
    cur: psycopg.Cursor[Any],
    schema: str,
    table: str,
    columns: Sequence[tuple[str, str]],
    source: RowFingerprint | None,
    loaded: int,
) -> RowFingerprint | None:
    """The fingerprint :func:`current_fingerprint` would take, without scanning: the source's.

    For a table that a binary COPY of the migration file's data (``columns``: each data
    column's name and the source's type text) filled while it was empty, and that no other
    session could write meanwhile (the caller knows). Its rows are then the source's rows, as
    the same bytes: when its columns are exactly the file's (names, order, types), each value
    prints as on the source, no trigger changed a row and ``loaded`` is the source's count, the
    source's fingerprint (``source``, taken by ``create`` over those columns in the file's
    snapshot, in the server encoding ``source.encoding``, which must be the target's: the sums
    hash the row text's bytes) is what a scan would compute. None when any of this is not shown:
    scan then.
    A table larger than ``MM_FINGERPRINT_MAX_BYTES`` gets none either way (omitted, as
    :func:`fingerprints_of` omits it).
    """
    if source is None or source.method != METHOD or source.rows != loaded:
        return None
    # the sums hash the row text's bytes: the same only in the same server encoding (a file
    # that does not say which, from before it recorded it, is scanned). The server reports its
    # encoding when the connection starts: no query per table
    encoding = cur.connection.info.parameter_status("server_encoding")
    if not source.encoding or encoding is None or source.encoding != encoding:
        return None
    row = cur.execute(
        _COPIED_TABLE, {"schema": schema, "table": table, "limit": max_bytes()}
    ).fetchone()
    if row is None or not row[0] or not row[3]:
        return None
    if list(zip(row[1], row[2], strict=True)) != [tuple(c) for c in columns]:
        return None
    return RowFingerprint(rows=loaded, sum0=source.sum0, sum1=source.sum1)


def lock_for_check(cur: psycopg.Cursor[Any], schema: str, table: str) -> None:
    """Keep others from writing the table until the transaction ends (reads go on)."""
    if table_columns(cur, schema, table) is None:
        return
    cur.execute(
        sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(pg.qualified(schema, table))
    )


class Changed(BaseModel):
    """A table changed in the target since the last migration into it recorded its fingerprint."""

    model_config = ConfigDict(frozen=True)

    table: str
    rule: str
    recorded_rows: int
    rows: int
    recorded_by: str | None = None


def changed_since(
    record: TargetRecord | None,
    current: Mapping[str, RowFingerprint | None],
    rules: Mapping[str, str],
    applied: Iterable[str],
) -> list[Changed]:
    """Tables of ``applied`` (the plan's units) whose rule replaces rows and whose target
    fingerprint differs from the recorded one. A table without a record, without a current
    fingerprint (absent, too large, locked) is not listed."""
    if record is None:
        return []
    out: list[Changed] = []
    for name in sorted(set(applied)):
        rule = rules.get(name)
        before, now = record.tables.get(name), current.get(name)
        if rule not in REPLACING_RULES or before is None or now is None:
            continue
        if not now.same_rows(before):
            out.append(
                Changed(
                    table=name,
                    rule=str(rule),
                    recorded_rows=before.rows,
                    rows=now.rows,
                    recorded_by=before.run,
                )
            )
    return out
