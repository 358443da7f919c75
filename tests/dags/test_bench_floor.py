"""The floor DAG of ``bench/airflow_bigdata.py`` has ``migration_sync``'s task shape."""

from __future__ import annotations

from pathlib import Path

from tests.airflowtools import get_dag
from tests.pgtools import REPO


def _rule(rule: object) -> str:
    return str(getattr(rule, "value", rule))


def test_the_floor_dag_has_the_sync_s_shape(tmp_path: Path) -> None:
    import importlib.util

    from airflow.dag_processing.dagbag import DagBag

    spec = importlib.util.spec_from_file_location(
        "bench_bigdata", REPO / "bench" / "airflow_bigdata.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    env = bench.floor_bundle(tmp_path)
    assert '"bench-floor"' in env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"]
    bag = DagBag(dag_folder=str(tmp_path / "floor_bundle"))
    assert bag.import_errors == {}
    floor = bag.dags[bench.FLOOR_DAG]
    sync = get_dag("migration_sync")
    assert set(floor.task_ids) == set(sync.task_ids)
    for task in sync.tasks:
        twin = floor.get_task(task.task_id)
        assert twin.upstream_task_ids == task.upstream_task_ids, task.task_id
        assert _rule(twin.trigger_rule) == _rule(task.trigger_rule), task.task_id
        assert twin.pool == task.pool, task.task_id
    # the units are mapped over the plan's twin, through the sync's pool
    assert floor.get_task("apply_table").pool == "migration_units"
    assert type(floor.get_task("apply_table")).__name__ == "MappedOperator"
