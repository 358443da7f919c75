"""The migration store in Airflow: its root, and reading and writing migration files, backups and records there.

Which folder holds what is :mod:`migration_manager.store_layout`.

``MIGRATION_STORE`` is an ``ObjectStoragePath`` URI (``file:///srv/migrations``,
``s3://bucket/migrations`` with an ``aws_default``-style connection, ...). Unset, it is
``$AIRFLOW_HOME/migrations``.
"""

from __future__ import annotations

import contextlib
import errno
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
from migration_manager.errors import BackupError, ConfigError, MigrationError, StoreError
from migration_manager.prod_edits import TargetRecord
from migration_manager.run_files import RECORD, write_files
from migration_manager.run_record import RunRecord
from migration_manager.step_kinds import Rollback
from migration_manager.step_outcomes import RollbackOutcome

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
    ``<id>.preview.zip``: the Migration files page marks it, retention keeps only the newest).

    The store shows the file only once it is whole (:func:`_put`); a store that does not take
    it fails with a :class:`StoreError` naming the store and what to do.
    """
    dest = layout.migration_file(
        store_root(), layout.migration_file_name(migration_id, preview=preview)
    )
    with tempfile.NamedTemporaryFile(prefix="mm-", suffix=".zip", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with tmp_path.open("w+b") as fh:
            yield fh, dest
        with store_writes(f"the migration file {dest.name}"):
            _put(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


_PERSON_MUST_ACT = {
    errno.ENOSPC: "the store is full: free space there (fewer backups: backups_to_keep; old "
    "run logs and files: retention) or point MIGRATION_STORE at a larger place",
    errno.EDQUOT: "the store's quota is used up: free space there or point MIGRATION_STORE "
    "at a larger place",
    errno.EROFS: "the store is read-only: make it writable for the Airflow workers or point "
    "MIGRATION_STORE at a writable place",
    errno.EACCES: "the Airflow workers may not write there: fix its permissions or point "
    "MIGRATION_STORE at a writable place",
    errno.EPERM: "the Airflow workers may not write there: fix its permissions or point "
    "MIGRATION_STORE at a writable place",
}


@contextmanager
def store_writes(what: str, after: str = "") -> Iterator[None]:
    """Writes of ``what`` into the store: a failure becomes a :class:`StoreError` that names
    the store, the reason and what to do (``after``: what the failure means for the run)."""
    try:
        yield
    except MigrationError:
        raise
    except Exception as exc:  # OSError, or the object store's client errors (botocore, ...)
        code = getattr(exc, "errno", None)
        advice = _PERSON_MUST_ACT.get(code) if isinstance(code, int) else None
        reason = (os.strerror(code) if isinstance(code, int) else "") or str(exc) or repr(exc)
        raise StoreError(
            f"Cannot write {what} to the migration store {store_root()} ({reason}): "
            + (
                advice
                or "the store did not take it (unreachable or failing): check "
                "MIGRATION_STORE and its connection"
            )
            + f", then run again. {after or 'Nothing was written to the target.'}".rstrip(),
            terminal=advice is not None,
        ) from exc


# --- backups: backups/<target key>/<backup id>.dump + <backup id>.json ---------------------
# (the key is store_layout.backup_key of the target's connection id)


def backup_dir(key: str) -> ObjectStoragePath:
    return layout.backup_dir(store_root(), key)


def _put(local: Path, dest: ObjectStoragePath) -> None:
    """Move a finished local file into the store; ``dest`` appears whole or not at all.

    A local store gets a hidden ``.<name>.<pid>.part`` beside ``dest``, renamed over it once
    written (removed when the write fails: a full disk leaves nothing a listing shows). An
    object store gets one upload, aborted (never committed) when a part of it fails.
    """
    if dest.protocol in ("file", "local", ""):
        final = Path(dest.path)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(f".{final.name}.{os.getpid()}.part")
        try:
            shutil.copyfile(local, part)
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    out = dest.open("wb")
    try:
        with local.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:
        # fsspec's close() would commit what was uploaded so far: throw the upload away
        discard = getattr(out, "discard", None)
        if callable(discard):
            discard()
        with contextlib.suppress(AttributeError):
            out.closed = True  # nothing left for close() (or the garbage collector) to commit
        raise
    out.close()


def write_text(path: ObjectStoragePath, text: str) -> None:
    """Write a small file of the store whole or not at all (a local store: a ``.part`` renamed
    over it; an object store: one PUT)."""
    if path.protocol in ("file", "local", ""):
        final = Path(path.path)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(f".{final.name}.{os.getpid()}.part")
        try:
            part.write_text(text)
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def save_backup(
    dsn: str, key: str, *, keep: int, **meta: Any
) -> tuple[BackupRecord, ObjectStoragePath]:
    """Take a backup into the store (dump first, its record last), then remove the oldest beyond ``keep``.

    A store that does not take the dump or the record fails with a :class:`StoreError`; a dump
    whose record could not be written is removed (it would never be listed nor restored).
    """
    expired([], keep)  # validate before the dump
    after = "The migration did not start: nothing was written to the target."
    with tempfile.NamedTemporaryFile(prefix="mm-backup-", suffix=".dump", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        record = take_backup(dsn, tmp_path, **meta)
        folder = backup_dir(key)
        dest = folder / record.dump_file
        with store_writes(f"backup {record.backup_id} of target {key}", after):
            _put(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    try:
        with store_writes(f"the record of backup {record.backup_id} of target {key}", after):
            write_text(layout.backup_record(store_root(), key, record.backup_id), record.to_json())
    except StoreError:
        with contextlib.suppress(Exception):
            dest.unlink()
        raise
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


def record_run_rollback(dag_id: str, run_id: str, outcome: RollbackOutcome) -> None:
    """Remember that this run's target was rolled back (outlives clearing the rollback task)."""
    with store_writes(
        f"the rollback record of run {dag_id}/{run_id}", "The target was rolled back."
    ):
        document = {"dag_id": dag_id, "run_id": run_id, **outcome.model_dump(mode="json")}
        write_text(_run_file(dag_id, run_id), json.dumps(document))


def run_rollback_record(dag_id: str, run_id: str) -> RollbackOutcome | None:
    """The rollback recorded for this run; None when the run was never rolled back."""
    path = _run_file(dag_id, run_id)
    if not path.exists():
        return None
    try:
        return RollbackOutcome.model_validate_json(path.read_text())
    except ValueError:
        # unreadable, but it exists: the run was rolled back
        return RollbackOutcome(status=Rollback.ROLLED_BACK, backup_id="(record unreadable)")


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
        return TargetRecord.model_validate_json(path.read_text())
    except (ValueError, KeyError, TypeError):
        log.warning("%s is unreadable: no prod edits can be found this time", path)
        return None


def save_target_record(record: TargetRecord) -> ObjectStoragePath:
    path = _target_record_path(record.target_key)
    with store_writes(
        f"the fingerprints of target {record.target_key}",
        "The migration itself is applied; the next run cannot tell prod edits this time.",
    ):
        write_text(
            path,
            json.dumps(record.model_dump(mode="json", exclude_none=True), indent=1, sort_keys=True),
        )
    return path


# --- run logs: logs/<migration>/<run>/ (migration_manager.run_files) -------------------------


def save_run_log(folder: ObjectStoragePath, record: RunRecord, *, final_status: str) -> None:
    """Write a run's log folder; a store that does not take it fails with a :class:`StoreError`
    (and no half-written ``migration.json`` is left to be read as the run's record)."""
    try:
        with store_writes(
            f"the log of run {record.dag_id}/{record.run_id}",
            f"The migration itself ended {final_status}; its task logs in Airflow still tell it.",
        ):
            write_files(as_local(folder), record)
    except StoreError:
        with contextlib.suppress(Exception):
            (as_local(folder) / RECORD).unlink()
        raise
