"""Airflow's own floor: a DAG of the sync's task shape whose tasks do nothing.

Not a DAG of the project: ``bench/airflow_bigdata.py`` copies this file, with the shape of
``migration_sync`` (``floor_shape.json``: each task's id, upstream tasks, trigger rule, pool,
and which one is mapped over which), into a DAG bundle of its own Airflow. Each task is a task
process that returns at once, with the same dependencies, trigger rules and pool as the
sync's; the mapped task gets ``conf["units"]`` map indexes. ``conf["skip"]``: the tasks
``conf["skipper"]`` has the scheduler skip (as ``plugin_check`` does in the sync);
``conf["skip_self"]``: tasks that skip themselves in a task process (as ``rollback`` does
when no unit failed). Its run time is what the chain costs whatever the engine does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, XComArg
from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.exceptions import AirflowSkipException

SHAPE = json.loads((Path(__file__).parent / "floor_shape.json").read_text())
DAG_ID = "migration_floor"


class NoOp(BaseOperator, SkipMixin):
    """Does nothing; the mapped task's source returns the units, the skipper skips."""

    def __init__(self, *, unit: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unit = unit

    def execute(self, context: Any) -> Any:
        conf = context["dag_run"].conf or {}
        if self.task_id in conf.get("skip_self", ()):
            raise AirflowSkipException("skips itself, as the sync's task does")
        if self.task_id == SHAPE["map_source"]:
            return list(range(int(conf.get("units", 5))))
        if self.task_id == conf.get("skipper") and conf.get("skip"):
            self.skip(context["ti"], [self.dag.get_task(t) for t in conf["skip"]])
        return None


with DAG(DAG_ID, schedule=None, catchup=False, max_active_runs=1, tags=["bench"]) as dag:
    tasks: dict[str, Any] = {}
    for spec in SHAPE["tasks"]:  # topological order: a mapped task's source comes first
        kwargs = {"task_id": spec["task_id"], "trigger_rule": spec["trigger_rule"], "retries": 0}
        if spec.get("pool"):
            kwargs["pool"] = spec["pool"]
        if spec["task_id"] == SHAPE["mapped"]:
            source = tasks[SHAPE["map_source"]]
            tasks[spec["task_id"]] = NoOp.partial(**kwargs).expand(unit=XComArg(source))
        else:
            tasks[spec["task_id"]] = NoOp(**kwargs)
    for spec in SHAPE["tasks"]:
        for up in spec["upstream"]:
            tasks[up] >> tasks[spec["task_id"]]
