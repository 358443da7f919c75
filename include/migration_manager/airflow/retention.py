"""Retention in a run: the lease on the run's migration file, pruning after ``collect_logs`` wrote the log.

See :mod:`migration_manager.retention`. Neither ever fails the migration: a problem is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from migration_manager import retention
from migration_manager.airflow.run_log import UNKNOWN_MIGRATION, step_started
from migration_manager.airflow.store import store_root
from migration_manager.run_options import RunOptions
from migration_manager.store_layout import PREVIEW_SUFFIX, backup_key, run_log_names

log = logging.getLogger(__name__)


def lease_file(context: Any) -> None:
    """``pre_execute`` of the run's first task reading the file: record the step, lease the file."""
    step_started(context)
    try:
        ref = getattr(context["task"], "migration_file", None)
        ti = context["ti"]
        name = retention.take_lease(
            store_root(), str(ref or ""), dag_id=ti.dag_id, run_id=ti.run_id
        )
        if name:
            log.info(
                "Migration file %s is in use by this run (kept from pruning until it ends)", name
            )
    except Exception:
        log.warning("Could not mark the migration file in use", exc_info=True)


def finish_run(context: Any, *, migration_id: str | None) -> retention.Pruned | None:
    """Release the run's lease, then prune the target's old run logs and migration files."""
    ti = context["ti"]
    options = RunOptions.of_params(context.get("params"))
    root = store_root()
    try:
        retention.release_lease(root, dag_id=ti.dag_id, run_id=ti.run_id)
        target = options.target_conn_id
        if options.dry_run:
            # a dry run leaves the store's history as it is; a preview's file is pruned
            retention.prune_previews(
                root, current_file=f"{migration_id}{PREVIEW_SUFFIX}" if migration_id else None
            )
            return None
        if not target:
            return None
        pruned = retention.prune(
            root,
            target,
            target_key=backup_key(target),
            files_to_keep=options.files_to_keep,
            logs_to_keep=options.logs_to_keep,
            current=run_log_names(migration_id or UNKNOWN_MIGRATION, ti.run_id),
            current_file=f"{migration_id}.zip" if migration_id else None,
        )
    except Exception:
        log.warning("Pruning old run logs and migration files failed", exc_info=True)
        return None
    if pruned.files or pruned.logs:
        log.info(
            "Retention for %s: removed %d run log(s) and %d migration file(s)",
            target,
            len(pruned.logs),
            len(pruned.files),
        )
    return pruned
