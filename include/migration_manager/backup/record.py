"""The backup record: everything known about one backup, and its JSON beside the dump.

:class:`BackupRecord` is the one typed form of a record; :meth:`BackupRecord.to_json` and
:func:`read_record` / :func:`read_records` are the one place it is written and parsed (the
store, retention and the Migrations page all read records through them). Also here: backup
ids, and which backups are beyond the number to keep.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_serializer, model_validator

from migration_manager.backup.fingerprints import Fingerprint
from migration_manager.errors import BackupError, ConfigError
from migration_manager.store_layout import dump_name

log = logging.getLogger(__name__)

RECORD_FORMAT = "migration-manager-backup"
RECORD_VERSION = 1
_ID = re.compile(r"^bk-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")


class BackupRecord(BaseModel):
    """Everything known about one backup; stored as JSON beside the dump."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: str = RECORD_FORMAT
    format_version: int = RECORD_VERSION
    backup_id: str
    created_at: str
    database: str
    server_version: str
    pg_dump_version: str
    size: int
    sha256: str
    seconds: float
    fingerprints: dict[str, Fingerprint]  # "schema.table" -> (rows, checksum)
    schemas: tuple[str, ...] = ()
    profile: str = "generic"
    app_version: str | None = None
    app_settings: dict[str, str] = {}
    migration_id: str | None = None
    run_id: str | None = None
    target_conn_id: str | None = None
    dump_file: str = ""

    @model_validator(mode="before")
    @classmethod
    def _readable(cls, d: Any) -> Any:
        """BackupError for a document that is not a record this tool can read."""
        if not isinstance(d, Mapping) or d.get("format", RECORD_FORMAT) != RECORD_FORMAT:
            found = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise BackupError(f"Not a backup record (format {found!r}, expected {RECORD_FORMAT!r})")
        try:
            version = int(d.get("format_version") or RECORD_VERSION)
        except (TypeError, ValueError):
            raise BackupError(
                f"Backup record version {d.get('format_version')!r} is not a number"
            ) from None
        if version > RECORD_VERSION:
            raise BackupError(
                f"Backup record version {d.get('format_version')} is newer than this tool's "
                f"({RECORD_VERSION}); upgrade migration-manager to restore it"
            )
        if not d.get("dump_file") and isinstance(d.get("backup_id"), str):
            return {**d, "dump_file": dump_name(d["backup_id"])}
        return d

    @field_serializer("fingerprints")
    def _in_name_order(self, value: dict[str, Fingerprint]) -> dict[str, Fingerprint]:
        return dict(sorted(value.items()))

    @property
    def tables(self) -> int:
        return len(self.fingerprints)

    @property
    def rows(self) -> int:
        return sum(r for r, _ in self.fingerprints.values())

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def parse(cls, doc: Any) -> BackupRecord:
        """The record from its JSON document; BackupError when it is not one this tool can read."""
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise BackupError(f"Backup record is incomplete or malformed ({exc})") from exc

    def describe(self) -> str:
        return (
            f"{self.backup_id}  {self.created_at}  db={self.database}  app={self.app_version or '-'}  "
            f"server={self.server_version}  {self.tables} tables, {self.rows} rows, {self.size} bytes"
            + (f"  migration={self.migration_id}" if self.migration_id else "")
        )


def read_record(path: Any) -> BackupRecord:
    """The record stored at ``path`` (any path-like with ``read_text``); BackupError naming it."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"Backup record {path} is unreadable ({exc})") from exc
    try:
        return BackupRecord.parse(doc)
    except BackupError as exc:
        raise BackupError(f"{path}: {exc}") from exc


def _json_files(folder: Any) -> list[Any]:
    """The ``.json`` files of one target's folder in the store (none when it does not exist)."""
    try:
        paths = list(folder.iterdir()) if folder.exists() else []
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [path for path in paths if path.name.endswith(".json")]


def read_records(folder: Any) -> list[BackupRecord]:
    """The records in one target's backup folder, newest first (unreadable ones logged and left out)."""
    found = []
    for path in _json_files(folder):
        try:
            found.append(read_record(path))
        except BackupError as exc:
            log.warning("Skipping unreadable backup record %s: %s", path, exc)
    return sorted(found, key=lambda r: (r.created_at, r.backup_id), reverse=True)


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"bk-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_backup_id(backup_id: str) -> str:
    value = (backup_id or "").strip()
    if not _ID.match(value):
        raise ConfigError(
            f"backup_id {backup_id!r} is not a backup id (like bk-20260101T120000Z-1a2b3c); "
            "run migration_rollback without backup_id to list the available ones"
        )
    return value


def expired(records: Iterable[BackupRecord], keep: int) -> list[str]:
    """Ids of the backups beyond the ``keep`` newest (oldest last)."""
    if keep < 1:
        raise ConfigError(f"backups_to_keep must be at least 1, got {keep}")
    keyed = sorted(((r.created_at or "", r.backup_id) for r in records), reverse=True)
    return [bid for _, bid in keyed[keep:]]


class RestoreRecord(BaseModel):
    """A backup restored by a ``migration_rollback`` run: which, by which run, what it undid.

    Stored in the migration store (``restores/<target key>/``) by the restore task once the
    restore is verified; the Migrations page marks the run that took the backup "rolled back"
    and the Backups page says when (and by which run) a backup was restored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    backup_id: str
    target_conn_id: str
    mode: str
    database: str
    dag_id: str
    run_id: str
    restored_at: str
    triggered_by: str | None = None
    tables: int = 0
    rows: int = 0
    # the run that took the backup (before its writes): the restore undid it, and what came after
    undid_migration_id: str | None = None
    undid_run_id: str | None = None


def read_restores(folder: Any) -> list[RestoreRecord]:
    """The restore records in one target's folder, newest first (unreadable ones logged and left out)."""
    found = []
    for path in _json_files(folder):
        try:
            found.append(RestoreRecord.model_validate_json(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("Skipping unreadable restore record %s: %s", path, exc)
    return sorted(found, key=lambda r: (r.restored_at, r.run_id), reverse=True)
