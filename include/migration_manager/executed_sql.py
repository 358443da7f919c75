"""The SQL a run executed on the target, from its record: ``schema.sql`` and ``data.sql``.

- ``schema.sql``: every DDL statement executed, in order, grouped by unit and table, runnable
  as a script (``psql -v ON_ERROR_STOP=1 -f schema.sql``).
- ``data.sql``: the data statements' shapes (staging, COPY, merge, sequences), never row values.
"""

from __future__ import annotations

from typing import Literal

from migration_manager.redaction import redact
from migration_manager.run_record import RunRecord, endpoint
from migration_manager.text_format import when


def _statement(stmt: str) -> str:
    stmt = stmt.strip()
    return stmt if stmt.endswith(";") else stmt + ";"


def _sql_groups(
    record: RunRecord, key: Literal["ddl", "data_sql"]
) -> list[tuple[str, str, list[str]]]:
    """(unit label, table, statements) in apply order: units as planned, tables referenced-first."""
    by_table = {t.table: list(getattr(t, key)) for t in record.tables}
    seen: set[str] = set()
    groups = []
    for unit in record.units:
        for name in unit.tables:
            seen.add(name)
            stmts = by_table.get(name) or []
            if stmts:
                groups.append((unit.label, name, stmts))
    for name, stmts in by_table.items():
        if name not in seen and stmts:
            groups.append(("-", name, stmts))
    return groups


def _sql_header(record: RunRecord, what: str) -> list[str]:
    return [
        f"-- {what}",
        f"-- Migration {record.migration_id}, run {record.run_id} of {record.dag_id}",
        f"-- Target {endpoint(record.target)}; started {when(record.started_at)}; "
        f"status {record.status}",
    ]


def schema_sql(record: RunRecord) -> str:
    """``schema.sql``: every DDL statement executed, in order, grouped by table; runnable as a script.

    Each unit ran in its own transaction; the script does the same with BEGIN/COMMIT per unit.
    Units that failed were rolled back and executed nothing that stayed: they are not listed.
    """
    lines = _sql_header(record, "Schema (DDL) statements executed on the target, in order")
    groups = _sql_groups(record, "ddl")
    lines.append(
        "-- Run with: psql -v ON_ERROR_STOP=1 -f schema.sql  "
        f"({sum(len(g[2]) for g in groups)} statements)"
    )
    if not groups:
        lines += ["", "-- No schema statement was executed."]
    current_unit = None
    for unit, table, stmts in groups:
        if unit != current_unit:
            if current_unit is not None:
                lines.append("COMMIT;")
            lines += ["", f"-- Unit: {unit}", "BEGIN;"]
            current_unit = unit
        lines += ["", f"-- Table {table}: {len(stmts)} statement(s)"]
        lines += [_statement(s) for s in stmts]
    if current_unit is not None:
        lines.append("COMMIT;")
    return redact("\n".join(lines)) + "\n"


def data_sql(record: RunRecord) -> str:
    """``data.sql``: the shapes of the data statements, grouped by table; no row values.

    COPY reads from the migration file's data, which is not included, so this is a record of
    what ran, not a script to run.
    """
    lines = _sql_header(
        record, "Data statements executed on the target (shapes only, no row values)"
    )
    lines.append("-- COPY ... FROM STDIN read the migration file's rows; they are not included.")
    groups = _sql_groups(record, "data_sql")
    if not groups:
        lines += ["", "-- No data statement was executed."]
    for unit, table, stmts in groups:
        lines += ["", f"-- Table {table} (unit {unit}): {len(stmts)} statement(s)"]
        lines += [_statement(s) for s in stmts]
    return redact("\n".join(lines)) + "\n"
