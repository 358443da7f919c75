"""
### migration_sync

Create a migration file from the source and execute it on the target in one run
(staging → prod). Same params as `migration_create` and `migration_execute`.
"""

from __future__ import annotations

from airflow.sdk import dag

from migration_manager.airflow.params import sync_params
from migration_manager.airflow.wiring import DEFAULT_ARGS, TAGS, create_task, execute_chain


@dag(
    dag_id="migration_sync",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    params=sync_params(),
    doc_md=__doc__,
)
def migration_sync() -> None:
    create = create_task(sync=True)
    done = execute_chain(create.output)
    create >> done


migration_sync()
