"""
### migration_backup

Take a **backup** of a database now (`pg_dump -Fc`, with its record: versions, the
application's version and settings, sha256, every table's row count and content checksum),
into `MIGRATION_STORE/backups/<target_conn_id>/`. `migration_execute` takes one by itself
before writing; this DAG is for the blue-green workflow's "safety backup" of the running
production (restore it into a new database with `migration_rollback`, mode `new_database`).
It takes the target's lock for the dump, so it waits for a migration running on that target.
"""

from __future__ import annotations

from airflow.sdk import dag

from migration_manager.airflow.params import standalone_backup_params
from migration_manager.airflow.wiring import (
    DEFAULT_ARGS,
    TAGS,
    standalone_backup_task,
)


@dag(
    dag_id="migration_backup",
    schedule=None,
    catchup=False,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    params=standalone_backup_params(),
    doc_md=__doc__,
)
def migration_backup() -> None:
    standalone_backup_task()


migration_backup()
