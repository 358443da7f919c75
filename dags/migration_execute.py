"""
### migration_execute

Execute a **migration file** on the target environment: `plan` verifies the file and compares
it with the target, `apply_table` applies each unit (a table, or tables linked by foreign
keys) in its own transaction, in parallel (many small units share a task: `max_apply_tasks`),
and `collect_logs` writes the run's log and fails the run if any unit failed. Clear a failed
`apply_table` map index to retry the units of it that did not succeed.
"""

from __future__ import annotations

from airflow.sdk import dag

from migration_manager.airflow.params import execute_params
from migration_manager.airflow.wiring import DEFAULT_ARGS, TAGS, execute_chain


@dag(
    dag_id="migration_execute",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    params=execute_params(),
    doc_md=__doc__,
)
def migration_execute() -> None:
    execute_chain("{{ params.migration_file }}")


migration_execute()
