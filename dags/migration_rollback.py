"""
### migration_rollback

Restore a **backup** that `migration_execute` / `migration_sync` took of the target before
writing (`MIGRATION_STORE/backups/<target_conn_id>/`).

- `mode` **in_place** (scenario A, a failed migration): the target database becomes the backup
  again, in one transaction; refused while other clients are connected (stop the app first).
- `mode` **new_database** (scenario B, clean-state recovery or blue-green): a fresh database
  `new_database_name` on the same server receives the backup; the current database is left
  untouched, ready for a traffic switch.

Refused unless `force`: an application version or PostgreSQL major version different from
the backup's. A damaged backup (sha256) is always refused. Every table's row count and content
checksum is verified against the backup's record afterwards. Without `backup_id` the run lists
the target's backups in its log and fails. After an in-place restore, `app_restart` restarts the
target's running app when its connection names it (`app_url`), or says it must be restarted.
"""

from __future__ import annotations

from airflow.sdk import dag

from migration_manager.airflow.params import rollback_params
from migration_manager.airflow.wiring import (
    DEFAULT_ARGS,
    TAGS,
    app_restart_task,
    restore_task,
)


@dag(
    dag_id="migration_rollback",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    params=rollback_params(),
    doc_md=__doc__,
)
def migration_rollback() -> None:
    # an in-place restore changes what the running app serves: restart it (or say it must be)
    restore = restore_task()
    restore >> app_restart_task(restore=restore.output)


migration_rollback()
