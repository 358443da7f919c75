"""The migration store in Airflow: its root, and reading and writing migration files, backups and records there.

Which folder holds what is :mod:`migration_manager.store_layout`.

``MIGRATION_STORE`` is an ``ObjectStoragePath`` URI (``file:///srv/migrations``,
``s3://bucket/migrations`` with an ``aws_default``-style connection, ...). Unset, it is
``$AIRFLOW_HOME/migrations``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from airflow.sdk import ObjectStoragePath

from migration_manager import store_layout as layout
from migration_manager.backup.dump import take_backup
from migration_manager.backup.record import (
    BackupRecord,
    RestoreRecord,
    check_backup_id,
    expired,
    read_record,
    read_records,
)
from migration_manager.errors import BackupError, ConfigError
from migration_manager.prod_edits import TargetRecord

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def as_local(path: ObjectStoragePath) -> Path | ObjectStoragePath:
    """A store path to read or write: a plain ``Path`` when the store is a local folder.

    Any I/O through an ObjectStoragePath first registers every provider's filesystem and
    lineage hooks (importing s3fs and botocore): seconds at the start of each task for a store
    that is a local folder. Other stores go through ObjectStoragePath as before.
    """
    return Path(path.path) if path.protocol in ("file", "local", "") else path


def store_root() -> ObjectStoragePath:
    uri = os.environ.get("MIGRATION_STORE", "").strip()
    if not uri:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        uri = Path(home, "migrations").resolve().as_uri()
    return ObjectStoragePath(uri)


def migration_file_path(ref: str) -> ObjectStoragePath:
    """A migration file from a param: a full URI, or a file name / id inside the store."""
    ref = (ref or "").strip()
    if not ref:
        raise ConfigError(
            "migration_file is empty: give the URI printed by migration_create, or a file name in the store"
        )
    if "://" in ref:
        return ObjectStoragePath(ref)
    if ref.startswith("/"):
        return ObjectStoragePath(Path(ref).resolve().as_uri())
    if not _SAFE_NAME.match(ref):
        raise ConfigError(
            f"migration_file {ref!r} is not a file name in the store (no paths, no '..'); give a full URI instead"
        )
    name = ref if ref.endswith(".zip") else f"{ref}.zip"
    return layout.migration_file(store_root(), name)


@contextmanager
def new_migration_file(
    migration_id: str, *, preview: bool = False
) -> Iterator[tuple[IO[bytes], ObjectStoragePath]]:
    """A local temporary file to write; on success it is moved into the store (a preview's as
    ``<id>.preview.zip``: the Migration files page marks it, retention keeps only the newest)."""
    dest = layout.migration_file(
        store_root(), layout.migration_file_name(migration_id, preview=preview)
    )
    with tempfile.NamedTemporaryFile(prefix="mm-", suffix=".zip", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with tmp_path.open("w+b") as fh:
            yield fh, dest
        _put(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


# --- backups: backups/<target key>/<backup id>.dump + <backup id>.json ---------------------
# (the key is store_layout.backup_key of the target's connection id)


def backup_dir(key: str) -> ObjectStoragePath:
    return layout.backup_dir(store_root(), key)


def _put(local: Path, dest: ObjectStoragePath) -> None:
    """Move a finished local file into the store (a rename on a local store, else a streamed copy)."""
    if dest.protocol in ("file", "local", ""):
        Path(dest.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(local), dest.path)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with local.open("rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def save_backup(
    dsn: str, key: str, *, keep: int, **meta: Any
) -> tuple[BackupRecord, ObjectStoragePath]:
    """Take a backup into the store (dump first, its record last), then remove the oldest beyond ``keep``."""
    expired([], keep)  # validate before the dump
    with tempfile.NamedTemporaryFile(prefix="mm-backup-", suffix=".dump", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        record = take_backup(dsn, tmp_path, **meta)
        folder = backup_dir(key)
        dest = folder / record.dump_file
        _put(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    as_local(layout.backup_record(store_root(), key, record.backup_id)).write_text(record.to_json())
    prune_backups(key, keep)
    return record, dest


def backup_records(key: str) -> list[BackupRecord]:
    """The target's backups, newest first (records that cannot be read are logged and left out)."""
    return read_records(backup_dir(key))


def load_backup_record(key: str, backup_id: str) -> BackupRecord:
    path = layout.backup_record(store_root(), key, check_backup_id(backup_id))
    if not path.exists():
        known = ", ".join(r.backup_id for r in backup_records(key)[:10]) or "none"
        raise BackupError(
            f"No backup {backup_id} for target {key} in {backup_dir(key)} (newest there: {known}); "
            "run migration_rollback without backup_id to list them"
        )
    return read_record(path)


@contextmanager
def local_backup_file(key: str, record: BackupRecord) -> Iterator[Path]:
    """The backup's dump as a local file (the store's own file, or a temporary download)."""
    src = backup_dir(key) / record.dump_file
    if not src.exists():
        raise BackupError(
            f"Backup {record.backup_id}: its dump {src} is missing; it cannot be restored"
        )
    if src.protocol in ("file", "local", ""):
        yield Path(src.path)
        return
    with tempfile.NamedTemporaryFile(prefix="mm-restore-", suffix=".dump", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with src.open("rb") as fh, tmp_path.open("wb") as out:
            shutil.copyfileobj(fh, out, 1 << 20)
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)


def prune_backups(key: str, keep: int) -> list[str]:
    """Remove the target's backups beyond the ``keep`` newest; returns the removed ids."""
    removed = expired(backup_records(key), keep)
    root = store_root()
    for backup_id in removed:
        # the record first: a backup without its record is never listed nor restored
        for path in (
            layout.backup_record(root, key, backup_id),
            layout.backup_dump(root, key, backup_id),
        ):
            if path.exists():
                path.unlink()
        log.info("Removed backup %s of %s (keeping the %d newest)", backup_id, key, keep)
    return removed


# --- rolled-back runs: rollbacks/<dag id>/<run key>.json -----------------------------------


def _run_file(dag_id: str, run_id: str) -> ObjectStoragePath:
    return layout.rollback_record(store_root(), dag_id, run_id)


def record_run_rollback(dag_id: str, run_id: str, outcome: dict[str, Any]) -> None:
    """Remember that this run's target was rolled back (outlives clearing the rollback task)."""
    path = _run_file(dag_id, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dag_id": dag_id, "run_id": run_id, **outcome}, default=str))


def run_rollback_record(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The rollback recorded for this run; None when the run was never rolled back."""
    path = _run_file(dag_id, run_id)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        # unreadable, but it exists: the run was rolled back
        return {"dag_id": dag_id, "run_id": run_id, "backup_id": "(record unreadable)"}
    return record if isinstance(record, dict) else {"backup_id": None}


# --- restored backups: restores/<target key>/<run key>.json ------------------------------------


def save_restore_record(key: str, record: RestoreRecord) -> ObjectStoragePath:
    """Remember that a migration_rollback run restored one of the target's backups."""
    path = layout.restore_record(store_root(), key, record.dag_id, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    as_local(path).write_text(record.model_dump_json(indent=1))
    return path


# --- per target: targets/<target key>/fingerprints.json --------------------------------------


def _target_record_path(target_key: str) -> ObjectStoragePath:
    return layout.target_record(store_root(), target_key)


def load_target_record(target_key: str) -> TargetRecord | None:
    """Each table's fingerprint as the last migrations into the target left it (None: none yet)."""
    path = _target_record_path(target_key)
    if not path.exists():
        return None
    try:
        return TargetRecord.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        log.warning("%s is unreadable: no prod edits can be found this time", path)
        return None


def save_target_record(record: TargetRecord) -> ObjectStoragePath:
    path = _target_record_path(record.target_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True))
    if path.protocol in ("file", "local", ""):
        Path(tmp.path).replace(path.path)
    else:
        path.write_text(tmp.read_text())
        tmp.unlink()
    return path
