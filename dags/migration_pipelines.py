"""
### Nightly sync pipelines

One scheduled DAG `sync_<name>` per pipeline of the YAML file named by `MIGRATION_PIPELINES`
(example: `include/pipelines.example.yaml`). An invalid file is an import error of this file
alone, naming the pipeline and the key; the other DAGs are not affected.
"""

from __future__ import annotations

from migration_manager.airflow.pipeline_dags import pipeline_dags

globals().update(pipeline_dags())
