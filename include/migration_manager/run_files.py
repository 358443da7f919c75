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

import json
from typing import Any, Protocol

from migration_manager.executed_sql import data_sql, schema_sql
from migration_manager.redaction import redact
from migration_manager.run_log_text import format_log
from migration_manager.run_record import JsonObject, RunRecord

RECORD = "migration.json"
LOG = "migration.log"
SCHEMA_SQL = "schema.sql"
DATA_SQL = "data.sql"
SUMMARY = "summary.json"
FILES = (RECORD, LOG, SCHEMA_SQL, DATA_SQL)

_SUMMARY_KEYS = (
    "migration_id",
    "status",
    "run_id",
    "failed_units",
    "tables",
    "totals",
    "warnings",
    "backup",
    "rollback",
    "dry_run",
)


class Writable(Protocol):
    """A folder in the store: ``pathlib.Path`` or Airflow's ``ObjectStoragePath``."""

    def __truediv__(self, other: str) -> Any: ...

    def mkdir(self, *args: Any, **kwargs: Any) -> Any: ...


def summary_of(record: RunRecord) -> JsonObject:
    """``summary.json``: the run summary's keys (as ``collect`` always wrote them)."""
    data = record.to_json_dict()
    out = {k: data.get(k) for k in _SUMMARY_KEYS}
    out["migration_file"] = record.migration_file.uri if record.migration_file else None
    return out


def render(record: RunRecord) -> dict[str, str]:
    """Every file of the run's log folder, by name."""
    return {
        RECORD: redact(record.to_json()),
        LOG: format_log(record),
        SCHEMA_SQL: schema_sql(record),
        DATA_SQL: data_sql(record),
        SUMMARY: json.dumps(summary_of(record), indent=1, default=str) + "\n",
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
