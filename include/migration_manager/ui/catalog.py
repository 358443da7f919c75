"""What the Migrations page shows, read from the migration store: run logs, migration files, backups.

Every name that comes from a URL is checked against a strict pattern (one path component, no
``..``, no slash) before it is joined to the store's root, so no request can reach outside
``logs/``, ``files/`` or ``backups/``. Uploaded migration files are verified (format, manifest
checksum, every data member's checksum) before they are stored as ``files/<migration id>.zip``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict

from migration_manager import digest, run_files, run_record
from migration_manager import store_layout as layout
from migration_manager.archive import ArchiveReader
from migration_manager.backup.record import (
    BackupRecord,
    RestoreRecord,
    read_records,
    read_restores,
)
from migration_manager.errors import ArchiveError, ArchiveLimitError
from migration_manager.signing import Signature, Trust

log = logging.getLogger(__name__)

DOWNLOADS = (*run_files.FILES, run_files.SUMMARY)
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,250}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,195}$")
MAX_UPLOAD_BYTES = int(os.environ.get("MM_MAX_UPLOAD_BYTES", str(8 << 30)))


class NotFound(LookupError):
    """No such run, file or backup (or a name that cannot be one)."""


class Refused(ValueError):
    """An upload that is not stored: not a valid migration file, or a different file of the same id."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


def _part(value: str) -> str:
    if not _PART.match(value or "") or value in (".", ".."):
        raise NotFound(value)
    return value


def file_name(value: str) -> str:
    """A migration file's name in ``files/``; NotFound for anything else (paths, ``..``, other suffixes)."""
    if not layout.MIGRATION_FILE.match(value or ""):
        raise NotFound(value)
    return value


def _is_local(path: Any) -> bool:
    return getattr(path, "protocol", "file") in ("file", "local", "")


def local_path(path: Any) -> Path | None:
    """The local file behind a store path (for a file response), None for remote stores."""
    return Path(path.path) if _is_local(path) else None


def _mtime(path: Any) -> float:
    try:
        return float(path.stat()["mtime"])
    except (KeyError, TypeError, OSError):
        return 0.0


def _size(path: Any) -> int | None:
    try:
        return int(path.stat()["size"])
    except (KeyError, TypeError, OSError):
        return None


def _children(folder: Any) -> list[Any]:
    try:
        if not folder.exists():
            return []
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


# --- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLogRef:
    """A run's log folder: ``logs/<migration>/<run>/`` (both names as the folders spell them)."""

    migration: str
    run: str

    @classmethod
    def checked(cls, migration: str, run: str) -> RunLogRef:
        return cls(_part(migration), _part(run))


def run_folder(root: Any, ref: RunLogRef) -> Any:
    folder = layout.run_log_dir(root, ref.migration, ref.run)
    if not (folder / run_files.RECORD).exists():
        raise NotFound(f"{ref.migration}/{ref.run}")
    return folder


def find_run(root: Any, run_id: str) -> RunLogRef:
    """The log folder of the DAG run ``run_id``, whichever migration it ran; NotFound until its
    ``collect_logs`` has written it."""
    run = _part(layout.safe_component(run_id))
    for folder in _children(root / layout.LOGS):
        if (folder / run / run_files.RECORD).exists():
            return RunLogRef(folder.name, run)
    raise NotFound(run_id)


def load_run(root: Any, ref: RunLogRef) -> run_record.RunRecord:
    path = run_folder(root, ref) / run_files.RECORD
    try:
        return run_record.read_record(path.read_text())
    except (ValueError, OSError) as exc:
        raise NotFound(f"{ref.migration}/{ref.run}: unreadable record ({exc})") from exc


def log_file(root: Any, ref: RunLogRef, name: str) -> Any:
    if name not in DOWNLOADS:
        raise NotFound(name)
    path = run_folder(root, ref) / name
    if not path.exists():
        raise NotFound(name)
    return path


@dataclass(frozen=True)
class RunEntry:
    """One line of the runs list, read from the run's :class:`~migration_manager.run_record.RunRecord`."""

    ref: RunLogRef
    migration_id: str | None
    run_id: str | None
    dag_id: str | None
    status: str
    started_at: str | None
    seconds: float | None
    source: str  # ``conn_id: user@host:port/database``, or "-"
    source_name: str  # the database named in the migration file: known whichever DAG ran it
    target: str
    target_name: str
    file: str | None
    tables: int
    changed_tables: int
    rows_changed: int
    ddl: int
    triggered_by: str | None
    dry_run: bool
    failed_step: str | None  # the first failed step: its task id, and its label (a unit's tables)

    @classmethod
    def of(cls, ref: RunLogRef, record: run_record.RunRecord) -> RunEntry:
        source, target = record.source, record.target
        failed = next((s for s in record.steps if s.status == "failed"), None)
        return cls(
            ref=ref,
            migration_id=record.migration_id,
            run_id=record.run_id,
            dag_id=record.dag_id,
            status=str(record.status),
            started_at=record.started_at,
            seconds=record.seconds,
            source=run_record.endpoint(source),
            source_name=(source and (source.database or source.conn_id)) or "-",
            target=run_record.endpoint(target),
            target_name=(target and (target.conn_id or target.database)) or "-",
            file=record.migration_file.name if record.migration_file else None,
            tables=len(record.tables),
            changed_tables=sum(
                1 for t in record.tables if t.status not in ("unchanged", "skipped")
            ),
            rows_changed=record.totals.changed,
            ddl=record.totals.ddl,
            triggered_by=record.triggered_by,
            dry_run=record.dry_run,
            failed_step=_step_name(failed) if failed else None,
        )


def _step_name(step: run_record.StepRecord) -> str:
    return f"{step.task_id} ({step.label})" if step.label else step.task_id


_ENTRIES: dict[str, tuple[float, RunEntry]] = {}  # record path -> (mtime, list entry)


def _entry(ref: RunLogRef, path: Any) -> RunEntry:
    """A run's list entry, parsed again only when its record changed (records can be large)."""
    key, mtime = str(path), _mtime(path)
    cached = _ENTRIES.get(key)
    if cached is not None and cached[0] == mtime and mtime:
        return cached[1]
    entry = RunEntry.of(ref, run_record.read_record(path.read_text()))
    _ENTRIES[key] = (mtime, entry)
    return entry


def list_runs(root: Any, *, target: str | None = None, status: str | None = None) -> list[RunEntry]:
    """Every run with a log, newest first; optionally only one target (connection id) or status."""
    entries = []
    for mfolder in _children(root / layout.LOGS):
        for rfolder in _children(mfolder):
            try:
                ref = RunLogRef.checked(mfolder.name, rfolder.name)
                entries.append(_entry(ref, rfolder / run_files.RECORD))
            except (NotFound, ValueError, OSError):
                continue
    if target:
        entries = [e for e in entries if target in (e.target_name, e.target)]
    if status:
        entries = [e for e in entries if e.status == status]
    entries.sort(key=lambda e: (e.started_at or "", e.run_id or ""), reverse=True)
    return entries


def targets(root: Any) -> list[str]:
    return sorted({e.target_name for e in list_runs(root) if e.target_name != "-"})


# --- migration files -------------------------------------------------------------------------


class FileSummary(BaseModel):
    """What the manifest of a stored migration file says, and who signed it (never its data);
    ``error`` instead when the file cannot be read."""

    model_config = ConfigDict(frozen=True)

    error: str | None = None
    signature: Signature | None = None
    id: str | None = None
    created_at: str | None = None
    profile: str | None = None
    source: str | None = None
    app_version: str | None = None
    tables: int | None = None
    data_tables: int | None = None
    rows: int | None = None


class FileEntry(FileSummary):
    """One line of the migration files list: the file, its summary, and why it is in use."""

    name: str
    preview: bool
    bytes: int | None
    modified: float
    in_use: tuple[str, ...] = ()


# What a listing shows of each file, verified once: keyed by name, size, modification time and
# the trusted keys, so a file is read again only when it (or the trust) changed.
_SUMMARIES: dict[tuple[str, int | None, float, tuple[str, ...] | None], FileSummary] = {}
_SUMMARIES_MAX = 4096


def _trust_key(trust: Trust | None) -> tuple[str, ...] | None:
    return None if trust is None else tuple(sorted(f"{k.name}:{k.key_id}" for k in trust.keys))


def _manifest_summary(path: Any, trust: Trust | None = None) -> FileSummary:
    """The manifest's summary and who signed the file (the reader's limits apply; never the data)."""
    try:
        with path.open("rb") as fh, ArchiveReader(fh, name=path.name) as reader:
            m = reader.manifest
            body_signature = reader.signature
            if trust is not None:
                body_signature = reader.signature_against(trust.keys)
    except (ArchiveError, OSError) as exc:
        return FileSummary(error=str(exc))
    data = [t.data for t in m.tables if t.data is not None]
    return FileSummary(
        id=m.id,
        created_at=m.created_at,
        profile=m.profile,
        source=m.source.database,
        app_version=m.source.app_version,
        tables=len(m.tables),
        data_tables=len(data),
        rows=sum(d.rows for d in data),
        signature=body_signature,
    )


def file_summary(path: Any, trust: Trust | None = None) -> FileSummary:
    """``_manifest_summary``, from the cache when the file and the trusted keys are unchanged."""
    key = (path.name, _size(path), _mtime(path), _trust_key(trust))
    found = _SUMMARIES.get(key)
    if found is None:
        found = _manifest_summary(path, trust)
        if len(_SUMMARIES) >= _SUMMARIES_MAX:
            _SUMMARIES.clear()
        _SUMMARIES[key] = found
    return found


def list_files(root: Any, trust: Trust | None = None) -> list[FileEntry]:
    """Migration files in ``files/``, newest first, each with its manifest's summary and signer."""
    found = [
        FileEntry(
            name=path.name,
            preview=layout.is_preview(path.name),
            bytes=_size(path),
            modified=_mtime(path),
            **dict(file_summary(path, trust)),
        )
        for path in _children(root / layout.FILES)
        if layout.MIGRATION_FILE.match(path.name)
    ]
    found.sort(key=lambda f: (f.created_at or "", f.modified), reverse=True)
    return found


def migration_file(root: Any, name: str) -> Any:
    path = layout.migration_file(root, file_name(name))
    if not path.exists():
        raise NotFound(name)
    return path


@contextlib.contextmanager
def _spooled(upload: IO[bytes]) -> Iterator[tuple[Path, str, int]]:
    """The upload in a local temporary file: (path, sha256, bytes)."""
    with tempfile.NamedTemporaryFile(prefix="mm-upload-", suffix=".zip", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            spooled = digest.copy(upload, tmp, limit=MAX_UPLOAD_BYTES)
        except digest.TooLarge:
            tmp_path.unlink(missing_ok=True)
            raise Refused(
                f"The file is larger than the upload limit of {MAX_UPLOAD_BYTES} bytes "
                "(MM_MAX_UPLOAD_BYTES); nothing was stored",
                status=413,
            ) from None
    try:
        yield tmp_path, spooled.hexdigest(), spooled.size
    finally:
        tmp_path.unlink(missing_ok=True)


class Stored(BaseModel):
    """An upload that was verified: the name it is stored under, and whether it was new."""

    model_config = ConfigDict(frozen=True)

    name: str
    id: str
    stored: bool
    sha256: str
    bytes: int | None = None


def store_upload(
    root: Any, upload: IO[bytes], filename: str = "", trust: Trust | None = None
) -> Stored:
    """Verify an uploaded migration file and store it as ``files/<its id>.zip``.

    Refused (nothing stored) when it is not a migration file of this format, breaks one of the
    reader's limits (413), fails a checksum, is not signed by a trusted key (``trust``, unless
    it allows unsigned files), or the store already holds a *different* file with the same id.
    The uploaded name is only used in messages: the stored name comes from the verified manifest.
    """
    shown = re.sub(r"[^A-Za-z0-9._ -]", "_", os.path.basename(filename or "upload"))[:120]
    with _spooled(upload) as (tmp, sha, size):
        if size == 0:
            raise Refused(f"{shown} is empty: choose a migration file (.zip) to upload")
        try:
            with tmp.open("rb") as fh, ArchiveReader(fh, name=shown, trust=trust) as reader:
                reader.verify()
                manifest = reader.manifest
        except ArchiveLimitError as exc:
            raise Refused(f"Refused {shown}: {exc}", status=413) from exc
        except ArchiveError as exc:
            raise Refused(f"Refused {shown}: {exc}") from exc
        migration_id = manifest.id
        if not _ID.match(migration_id):
            raise Refused(f"Refused {shown}: its manifest has no usable id ({migration_id!r})")
        name = f"{migration_id}.zip"
        dest = layout.migration_file(root, name)
        if dest.exists():
            if digest.file_digest(dest).hexdigest() == sha:
                return Stored(name=name, id=migration_id, stored=False, sha256=sha)
            raise Refused(
                f"Refused {shown}: the store already has a different file {name} with the same "
                "migration id; it was not replaced",
                status=409,
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _is_local(dest):
            part = Path(dest.path).with_name(f".{name}.{os.getpid()}.part")
            shutil.copyfile(tmp, part)
            os.replace(part, dest.path)
        else:
            with tmp.open("rb") as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, digest.CHUNK)
    log.info("Stored uploaded migration file %s (%d bytes, sha256 %s)", name, size, sha)
    return Stored(name=name, id=migration_id, stored=True, sha256=sha, bytes=size)


# --- backups ---------------------------------------------------------------------------------


class BackupEntry(BaseModel):
    """One line of the backups list: a backup record of a target, whether its dump is there,
    the restores made of it and its migration's log (``<migration>/<run>``) when the store has
    one."""

    model_config = ConfigDict(frozen=True)

    target: str  # the folder under backups/ (the target's connection id)
    record: BackupRecord
    dump_present: bool
    restores: tuple[RestoreRecord, ...] = ()
    log: str | None = None

    @property
    def target_conn_id(self) -> str:
        return self.record.target_conn_id or self.target


def list_backups(root: Any) -> list[BackupEntry]:
    """Backup records (``backups/<target>/<id>.json``), newest first; unreadable ones are skipped."""
    found = [
        BackupEntry(target=folder.name, record=rec, dump_present=(folder / rec.dump_file).exists())
        for folder in _children(root / layout.BACKUPS)
        for rec in read_records(folder)
    ]
    found.sort(key=lambda b: (b.record.created_at or "", b.record.backup_id), reverse=True)
    return found


def list_restores(root: Any) -> list[RestoreRecord]:
    """Backups restored by ``migration_rollback`` runs (``restores/<target>/``), newest first."""
    found = [r for folder in _children(root / layout.RESTORES) for r in read_restores(folder)]
    return sorted(found, key=lambda r: (r.restored_at, r.run_id), reverse=True)


def find_backup(root: Any, target_conn_id: str, backup_id: str) -> BackupEntry:
    """A stored backup of a target (as :func:`list_backups` lists it) whose dump is there, to
    restore; NotFound for anything else."""
    for b in list_backups(root):
        if b.record.backup_id == backup_id and b.target_conn_id == target_conn_id:
            if not b.dump_present:
                raise NotFound(f"Backup {backup_id}: its dump is missing; it cannot be restored")
            return b
    raise NotFound(f"No backup {backup_id} of {target_conn_id} in the store")
