"""Nightly sync pipelines as DAGs: one scheduled ``sync_<name>`` DAG per pipeline of the file.

``MIGRATION_PIPELINES`` names the YAML file (see ``migration_manager.pipelines``); unset, there
are no pipeline DAGs. Building them reads only that file: no connection, no database.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from migration_manager.airflow.params import sync_params
from migration_manager.airflow.wiring import DEFAULT_ARGS, TAGS, create_task, execute_chain
from migration_manager.pipelines import Pipeline, load_pipelines

ENV = "MIGRATION_PIPELINES"


def _doc(pipeline: Pipeline) -> str:
    return (
        f"### {pipeline.dag_id}\n\n"
        f"Nightly sync **{pipeline.source_conn_id} → {pipeline.target_conn_id}** "
        f"(profile `{pipeline.profile}`, schedule `{pipeline.schedule}`), from the pipelines file "
        f"`{os.environ.get(ENV, '')}`. Same tasks as `migration_sync`; the pipeline's settings are "
        "the params' defaults, so a manual trigger can change them for one run. One active run "
        f"at a time, no catch-up; table units go through the pool `{pipeline.pool}`."
    )


def pipeline_dag(pipeline: Pipeline) -> DAG:
    with DAG(
        dag_id=pipeline.dag_id,
        schedule=pipeline.schedule,
        catchup=False,
        max_active_runs=1,
        tags=[*TAGS, "pipeline"],
        default_args=DEFAULT_ARGS,
        params=sync_params(pipeline.conf()),
        doc_md=_doc(pipeline),
    ) as dag:
        create = create_task(sync=True)
        done = execute_chain(create.output, pool=pipeline.pool)
        create >> done
    return dag


def pipeline_dags(path: str | None = None) -> dict[str, DAG]:
    """DAG id -> DAG for every pipeline of the file (none when ``MIGRATION_PIPELINES`` is unset)."""
    path = path if path is not None else os.environ.get(ENV, "").strip()
    if not path:
        return {}
    return {p.dag_id: pipeline_dag(p) for p in load_pipelines(path)}
