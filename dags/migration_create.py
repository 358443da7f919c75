"""
### migration_create

Create a **migration file** from the source environment: every table of the application's
schema, each under its rule, read in one consistent snapshot, written into the migration
store (`MIGRATION_STORE`). The task returns the file's URI; pass it to `migration_execute`.
"""

from __future__ import annotations

from airflow.sdk import dag

from migration_manager.airflow.params import create_params
from migration_manager.airflow.wiring import DEFAULT_ARGS, TAGS, create_task


@dag(
    dag_id="migration_create",
    schedule=None,
    catchup=False,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    params=create_params(),
    doc_md=__doc__,
)
def migration_create() -> None:
    create_task()


migration_create()
