"""A sync pipeline may name a saved rule set (``rule_set: <name>``) instead of giving ``rules``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from migration_manager.pipelines import PipelineError, parse_pipelines
from tests.airflowtools import metadata_db, set_connections, summaries, task_states
from tests.pgtools import REPO, sql, table_text

PIPELINE = {
    "name": "nightly_sync",
    "source_conn_id": "migration_source",
    "target_conn_id": "migration_target",
    "schedule": "0 2 * * *",
    "profile": "generic",
    "rule_set": "nightly",
    "options": {"skip_backup": True, "on_missing_plugins": "fail", "on_missing_env": "fail"},
}


def test_a_pipeline_takes_a_rule_set_name() -> None:
    (pipeline,) = parse_pipelines({"pipelines": [PIPELINE]})
    assert pipeline.rule_set == "nightly"
    assert pipeline.conf()["rule_set"] == "nightly"
    (plain,) = parse_pipelines({"pipelines": [{**PIPELINE, "rule_set": None}]})
    assert plain.conf()["rule_set"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rules": {"user": {"default": "overwrite"}}}, "either 'rules' or 'rule_set'"),
        ({"rule_set": "../rules"}, "key 'rule_set': Rule set name '../rules' is not allowed"),
        ({"rule_set": 7}, "key 'rule_set'"),
    ],
)
def test_bad_rule_set_keys_name_the_pipeline(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineError, match="pipeline 'nightly_sync'") as info:
        parse_pipelines({"pipelines": [{**PIPELINE, **change}]})
    assert message in str(info.value)


@pytest.mark.airflow
@pytest.mark.postgres
def test_the_pipeline_dag_runs_with_the_saved_rule_set(
    tmp_path: Path, source: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduled DAG's params default to the rule set; its run uses the saved rules."""
    from migration_manager.airflow.pipeline_dags import pipeline_dags
    from migration_manager.airflow.rule_set_store import save_rule_set
    from migration_manager.rule_sets import NamedRuleSet

    sql(
        source,
        """
        CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);
        INSERT INTO orders SELECT g, g FROM generate_series(1, 20) g;
        CREATE TABLE notes (id bigint PRIMARY KEY, body text);
        INSERT INTO notes VALUES (1, 'a'), (2, 'b');
        """,
    )
    sql(target, "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);")
    set_connections(monkeypatch, migration_source=source, migration_target=target)
    save_rule_set(
        NamedRuleSet.parse(
            {
                "name": "nightly",
                "profile": "generic",
                "source_conn_id": "migration_source",
                "rules": {"user": {"default": "schema-only", "independent": {"orders": "upsert"}}},
            }
        )
    )
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump({"pipelines": [PIPELINE]}))
    assert pipeline_dags(str(path))["sync_nightly_sync"].params["rule_set"] == "nightly"

    # as the scheduler sees it: the DAG file reads MIGRATION_PIPELINES
    monkeypatch.setenv("MIGRATION_PIPELINES", str(path))
    metadata_db()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "migration_pipelines.py"))
    assert not bag.import_errors, bag.import_errors
    dag_run = bag.dags["sync_nightly_sync"].test()
    assert str(dag_run.state) == "success", task_states(dag_run)
    summary = next(s for s in summaries() if s["run_id"] == dag_run.run_id)
    tables = {t["table"]: t for t in summary["tables"]}
    assert (tables["orders"]["rule"], tables["orders"]["inserted"]) == ("upsert", 20)
    assert (tables["notes"]["rule"], tables["notes"]["inserted"]) == ("schema-only", 0)
    assert len(table_text(target, "orders")) == 20 and table_text(target, "notes") == []
