"""A run's log folder in the store: its files' names, writing it.

``MIGRATION_STORE/logs/<migration id>/<run id>/`` (folder names from
:func:`migration_manager.store_layout.run_log_names`) holds, written by :func:`write_files`:

- ``migration.json``: the run record (:mod:`migration_manager.run_record`), written last;
- ``migration.log``: the same as readable text (:mod:`migration_manager.run_log_text`);
- ``schema.sql`` and ``data.sql``: the SQL executed (:mod:`migration_manager.executed_sql`);
- ``summary.json``: the run summary's keys.

Every file is redacted once more as it is rendered.
"""

from __future__ import annotations

from typing import Any, Protocol

from migration_manager.executed_sql import data_sql, schema_sql
from migration_manager.redaction import redact
from migration_manager.run_log_text import format_log
from migration_manager.run_record import RunRecord, RunSummary

RECORD = "migration.json"
LOG = "migration.log"
SCHEMA_SQL = "schema.sql"
DATA_SQL = "data.sql"
SUMMARY = "summary.json"
FILES = (RECORD, LOG, SCHEMA_SQL, DATA_SQL)


class Writable(Protocol):
    """A folder in the store: ``pathlib.Path`` or Airflow's ``ObjectStoragePath``."""

    def __truediv__(self, other: str) -> Any: ...

    def mkdir(self, *args: Any, **kwargs: Any) -> Any: ...


def summary_of(record: RunRecord) -> RunSummary:
    """``summary.json``: the run summary, as the record holds it."""
    return RunSummary(
        migration_id=record.migration_id,
        migration_file=record.migration_file.uri if record.migration_file else None,
        status=record.status,
        run_id=record.run_id,
        failed_units=record.failed_units,
        tables=record.tables,
        totals=record.totals,
        warnings=record.warnings,
        backup=record.backup,
        rollback=record.rollback,
        dry_run=record.dry_run,
    )


def render(record: RunRecord) -> dict[str, str]:
    """Every file of the run's log folder, by name."""
    return {
        RECORD: redact(record.to_json()),
        LOG: format_log(record),
        SCHEMA_SQL: schema_sql(record),
        DATA_SQL: data_sql(record),
        SUMMARY: summary_of(record).model_dump_json(indent=1, exclude_unset=True) + "\n",
    }


def write_files(folder: Writable, record: RunRecord) -> list[Any]:
    """Write the run's log files into ``folder`` (created); ``migration.json`` last. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = render(record)
    written = []
    for name in (LOG, SCHEMA_SQL, DATA_SQL, SUMMARY, RECORD):
        path = folder / name
        path.write_text(files[name])
        written.append(path)
    return written
