"""The migration store's folders: where migration files, run logs, backups and records live.

Every path below is relative to the store's root, any ``pathlib``-like object
(``ObjectStoragePath`` in Airflow, ``Path`` in tests and the Migrations page)::

    files/<migration id>.zip                     migration files
    files/<migration id>.preview.zip             ... made by a preview (a dry-run sync), pruned
    logs/<migration id>/<run id>/                a run's log (see migration_manager.run_files)
    in_use/<dag id>__<run id>.json               leases of running runs on their file
    backups/<target key>/<backup id>.dump        a target's backups ...
    backups/<target key>/<backup id>.json        ... and their records (migration_manager.backup.record)
    rollbacks/<dag key>/<run id>-<hash>.json     runs whose target was rolled back
    restores/<target key>/<run id>-<hash>.json   backups restored by migration_rollback runs
    targets/<target key>/fingerprints.json       what the last migrations left (migration_manager.prod_edits)

Ids become folder names through :func:`safe_component` (run and migration ids, as in
:func:`run_log_names`) and :func:`backup_key` (connection and DAG ids); nothing here reads or
writes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from migration_manager.errors import ConfigError

FILES = "files"
LOGS = "logs"
IN_USE = "in_use"
BACKUPS = "backups"
ROLLBACKS = "rollbacks"
RESTORES = "restores"
TARGETS = "targets"
TARGET_RECORD = "fingerprints.json"
# a migration file's name in files/ (one path component, no "..")
MIGRATION_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.zip$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# a preview's migration file (a dry run of migration_sync): only the newest few are kept
PREVIEW_SUFFIX = ".preview.zip"


def migration_file_name(migration_id: str, *, preview: bool = False) -> str:
    """A migration file's name in ``files/`` (a preview's says so)."""
    return f"{migration_id}{PREVIEW_SUFFIX if preview else '.zip'}"


def is_preview(name: str) -> bool:
    return name.endswith(PREVIEW_SUFFIX)


def safe_component(value: str) -> str:
    """A run id or migration id as one path component (``manual__2026-01-01T00:00:00+00:00`` -> ``manual__2026-01-01T00_00_00_00_00``)."""
    return _UNSAFE.sub("_", value or "").strip(".") or "_"


def safe_key(value: str) -> str:
    """A connection (or DAG) id as one folder name; empty when nothing usable is left."""
    return _UNSAFE.sub("_", (value or "").strip()).strip("._")


def backup_key(conn_id: str) -> str:
    """The folder of a target's backups: its connection id, made safe for a path."""
    key = safe_key(conn_id)
    if not key:
        raise ConfigError("target_conn_id is empty: name the Airflow connection of the target")
    return key


def migration_file(root: Any, name: str) -> Any:
    """``files/<name>`` (``name`` is a file name already checked, e.g. against :data:`MIGRATION_FILE`)."""
    return root / FILES / name


def run_log_names(migration_id: str, run_id: str) -> tuple[str, str]:
    """The folder names of a run's log: ``(<migration>, <run>)`` under ``logs/``."""
    return safe_component(migration_id), safe_component(run_id)


def run_log_dir(root: Any, migration: str, run: str) -> Any:
    """``logs/<migration>/<run>/`` from folder names (see :func:`run_log_names`)."""
    return root / LOGS / migration / run


def lease_path(root: Any, dag_id: str, run_id: str) -> Any:
    """``in_use/<dag>__<run>.json``: the lease a running run holds on its migration file."""
    return root / IN_USE / f"{safe_component(dag_id)}__{safe_component(run_id)}.json"


def backup_dir(root: Any, key: str) -> Any:
    """``backups/<key>/``: one target's backups (``key`` from :func:`backup_key`)."""
    return root / BACKUPS / key


def backup_dump(root: Any, key: str, backup_id: str) -> Any:
    return backup_dir(root, key) / dump_name(backup_id)


def backup_record(root: Any, key: str, backup_id: str) -> Any:
    return backup_dir(root, key) / f"{backup_id}.json"


def dump_name(backup_id: str) -> str:
    """The dump's file name beside its record."""
    return f"{backup_id}.dump"


def _run_file_name(dag_id: str, run_id: str) -> str:
    """A run's file name: run ids hold ':' and '+', so it is made safe (and kept unique)."""
    digest = hashlib.sha1(f"{dag_id}\n{run_id}".encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', run_id)[:150]}-{digest}.json"


def rollback_record(root: Any, dag_id: str, run_id: str) -> Any:
    """The record of a run's rollback."""
    return root / ROLLBACKS / backup_key(dag_id) / _run_file_name(dag_id, run_id)


def restores_dir(root: Any, key: str) -> Any:
    """``restores/<key>/``: the restores of one target's backups (``key`` from :func:`backup_key`)."""
    return root / RESTORES / key


def restore_record(root: Any, key: str, dag_id: str, run_id: str) -> Any:
    """The record of the restore that the run ``run_id`` made of one of the target's backups."""
    return restores_dir(root, key) / _run_file_name(dag_id, run_id)


def target_record(root: Any, target_key: str) -> Any:
    """``targets/<target key>/fingerprints.json``."""
    return root / TARGETS / backup_key(target_key) / TARGET_RECORD
