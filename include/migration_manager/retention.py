"""Retention of migration files and run logs in the store, per target, like backups.

After a run has written its log, the store keeps per target (the target's connection id):

- the ``logs_to_keep`` newest run logs (``logs/<migration>/<run>/``) of runs into that target;
- the ``files_to_keep`` most recently run migration files (``files/<id>.zip``) among those that
  were run against that target **only** (a file also run against another target, and a file
  never run, is left alone; delete it on the Migration files page).

A preview (a dry run of ``migration_sync``) makes a migration file too, ``<id>.preview.zip``:
only the :data:`PREVIEWS_TO_KEEP` newest are kept (:func:`prune_previews`, after each preview).

Never removed: a file or log a **kept backup** refers to (its record names the migration and
the run it was taken for), a file a **running run** uses (runs hold a lease on their file in
``in_use/`` from their first task to ``collect_logs``; a lease older than
:data:`STALE_LEASE_HOURS` is taken for a run that died), and the current run's own. ``0``
keeps everything. Plain Python: the store is any ``pathlib``-like object
(``ObjectStoragePath`` in Airflow, ``Path`` in tests).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from migration_manager import run_files, text_format
from migration_manager import store_layout as layout
from migration_manager.backup.record import read_records
from migration_manager.run_options import check_keep

log = logging.getLogger(__name__)

STALE_LEASE_HOURS = 48
PREVIEWS_TO_KEEP = 3


def _children(folder: Any) -> list[Any]:
    try:
        return list(folder.iterdir()) if folder.exists() else []
    except (FileNotFoundError, NotADirectoryError):
        return []


def _file_name(ref: Any) -> str | None:
    """The store file name of a migration file reference (URI, path or name)."""
    name = str(ref or "").rstrip("/").rsplit("/", 1)[-1]
    return name if layout.MIGRATION_FILE.match(name) else None


@dataclass(frozen=True)
class RunLog:
    """One run log folder of the store."""

    migration: str  # folder names
    run: str
    target: str | None  # the target's connection id
    file: str | None  # the migration file's name in files/
    started_at: str

    @property
    def folder(self) -> tuple[str, str]:
        return (self.migration, self.run)


def run_logs(root: Any) -> list[RunLog]:
    """Every run log with a readable record, newest first."""
    found = []
    for mfolder in _children(root / layout.LOGS):
        for rfolder in _children(mfolder):
            path = rfolder / run_files.RECORD
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict):
                continue
            mfile = record.get("migration_file") or {}
            found.append(
                RunLog(
                    migration=mfolder.name,
                    run=rfolder.name,
                    target=(record.get("target") or {}).get("conn_id"),
                    file=_file_name(mfile.get("name") or mfile.get("uri")),
                    started_at=str(record.get("started_at") or record.get("ended_at") or ""),
                )
            )
    found.sort(key=lambda r: (r.started_at, r.run), reverse=True)
    return found


# --- leases: files in use by running runs -----------------------------------------------------


def take_lease(root: Any, file_ref: str, *, dag_id: str, run_id: str) -> str | None:
    """Mark the run's migration file in use (``in_use/<dag>__<run>.json``); returns the file's name."""
    name = _file_name(file_ref)
    if not name:
        return None
    path = layout.lease_path(root, dag_id, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "file": name,
        "dag_id": dag_id,
        "run_id": run_id,
        "since": text_format.utc_iso(datetime.now(UTC)),
    }
    path.write_text(json.dumps(doc))
    return name


def release_lease(root: Any, *, dag_id: str, run_id: str) -> None:
    path = layout.lease_path(root, dag_id, run_id)
    if path.exists():
        path.unlink()


def leases(root: Any, *, now: datetime | None = None) -> dict[str, list[str]]:
    """File name -> the runs (``dag/run``) holding a lease on it; stale leases are left out."""
    now = now or datetime.now(UTC)
    found: dict[str, list[str]] = {}
    for path in _children(root / layout.IN_USE):
        try:
            doc = json.loads(path.read_text())
            since = datetime.fromisoformat(str(doc["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if now - since > timedelta(hours=STALE_LEASE_HOURS):
            continue
        found.setdefault(str(doc.get("file")), []).append(
            f"{doc.get('dag_id')}/{doc.get('run_id')}"
        )
    return found


def backup_refs(root: Any, target_key: str | None = None) -> tuple[set[str], set[tuple[str, str]]]:
    """Files and run log folders the kept backups (of one target, or all) were taken for."""
    files: set[str] = set()
    runs: set[tuple[str, str]] = set()
    folders = (
        [layout.backup_dir(root, target_key)] if target_key else _children(root / layout.BACKUPS)
    )
    for folder in folders:
        for record in read_records(folder):
            if record.migration_id:
                files.add(f"{record.migration_id}.zip")
                if record.run_id:
                    runs.add(layout.run_log_names(record.migration_id, record.run_id))
    return files, runs


def in_use(root: Any, name: str) -> list[str]:
    """Why a migration file must not be deleted now: each running run, each kept backup."""
    reasons = [f"used by the running run {r}" for r in leases(root).get(name, [])]
    for folder in _children(root / layout.BACKUPS):
        files, _ = backup_refs(root, folder.name)
        if name in files:
            reasons.append(f"a kept backup of target {folder.name} was taken for it")
    return reasons


# --- pruning ---------------------------------------------------------------------------------


class Pruned(BaseModel):
    """What one retention pass removed, and what it kept because a run still uses it."""

    files: list[str] = []
    logs: list[str] = []  # "<migration>/<run>"
    kept_in_use: list[str] = []


def _remove_tree(folder: Any) -> None:
    for child in _children(folder):
        if child.is_dir():
            _remove_tree(child)
        else:
            child.unlink()
    with contextlib.suppress(OSError, NotImplementedError):  # object stores have no folders
        folder.rmdir()


def prune(
    root: Any,
    target_conn_id: str,
    *,
    target_key: str,
    files_to_keep: int,
    logs_to_keep: int,
    current: tuple[str, str] | None = None,
    current_file: str | None = None,
) -> Pruned:
    """Remove the target's run logs and migration files beyond what is kept (see the module doc)."""
    files_keep = check_keep(files_to_keep, "files_to_keep")
    logs_keep = check_keep(logs_to_keep, "logs_to_keep")
    pruned = Pruned()
    if not files_keep and not logs_keep:
        return pruned
    every = run_logs(root)
    mine = [r for r in every if r.target == target_conn_id]
    backup_files, backup_runs = backup_refs(root, target_key)
    leased = leases(root)
    if logs_keep:
        for entry in mine[logs_keep:]:
            label = f"{entry.migration}/{entry.run}"
            if entry.folder == current or entry.folder in backup_runs:
                pruned.kept_in_use.append(label)
                continue
            _remove_tree(layout.run_log_dir(root, entry.migration, entry.run))
            if not _children(root / layout.LOGS / entry.migration):
                _remove_tree(root / layout.LOGS / entry.migration)
            pruned.logs.append(label)
            log.info(
                "Removed run log %s of %s (keeping the %d newest)", label, target_conn_id, logs_keep
            )
    if files_keep:
        others = {r.file for r in every if r.file and r.target != target_conn_id}
        ordered = list(dict.fromkeys(r.file for r in mine if r.file))  # most recently run first
        for name in ordered[files_keep:]:
            if name in others:
                continue
            path = layout.migration_file(root, name)
            if not path.exists():
                continue
            if name == current_file or name in backup_files or name in leased:
                pruned.kept_in_use.append(name)
                continue
            path.unlink()
            pruned.files.append(name)
            log.info(
                "Removed migration file %s of %s (keeping the %d most recently run)",
                name,
                target_conn_id,
                files_keep,
            )
    return pruned


def prune_previews(
    root: Any, *, keep: int = PREVIEWS_TO_KEEP, current_file: str | None = None
) -> list[str]:
    """Remove previews' migration files beyond the ``keep`` newest (not one in use); returns
    the removed names."""
    found = [p for p in _children(root / layout.FILES) if layout.is_preview(p.name)]
    found.sort(key=lambda p: (_mtime(p), p.name), reverse=True)
    leased = leases(root)
    removed = []
    for path in found[keep:]:
        if path.name == current_file or path.name in leased:
            continue
        path.unlink()
        removed.append(path.name)
        log.info("Removed preview file %s (keeping the %d newest previews)", path.name, keep)
    return removed


def _mtime(path: Any) -> float:
    try:
        return float(path.stat().st_mtime)
    except AttributeError:  # an ObjectStoragePath's stat() is a mapping
        return float(path.stat().get("mtime") or 0)
    except OSError:
        return 0.0
