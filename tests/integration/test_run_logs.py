"""``collect_logs`` writes every run's log into the store, whatever happened upstream (``dag.test()``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import run_dag, set_connections, task_states, xcom
from tests.integration.dagrun_tools import (
    HELPDESK_SECRET,
    HELPDESK_URL,
    connect_nocobase_pair,
    log_folder,
    run_record,
)
from tests.pgtools import psql_bin, rows, sql

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

TARGET_DDL = "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(10,2)); "


def _steps(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["steps"]}


def _columns(dsn: str, table: str) -> list[tuple[Any, ...]]:
    return rows(
        dsn,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY column_name",
        (table,),
    )


def test_successful_run_is_logged_step_by_step(
    source: str, target: str, new_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(
        source,
        """
        CREATE TABLE "uiSchemas" ("x-uid" varchar(255) PRIMARY KEY, "schema" json);
        INSERT INTO "uiSchemas" VALUES ('a-1', '{"type":"void"}'), ('b-2', '{"x":1}');
        CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(10,2), tags text[] NOT NULL DEFAULT '{}');
        CREATE INDEX orders_tags ON orders USING gin (tags);
        INSERT INTO orders SELECT g, g * 1.5, ARRAY['tag-value-' || g] FROM generate_series(1, 50) g;
        """,
    )
    sql(target, TARGET_DDL + "INSERT INTO orders VALUES (1, 99), (9999, 1);")
    set_connections(monkeypatch, migration_source=source, migration_target=target)
    created = run_dag(
        "migration_create",
        {
            "profile": "generic",
            "rules": {"user": {"default": "overwrite", "independent": {"orders": "upsert"}}},
        },
    )
    uri = xcom(created, "create_migration_file")
    dag_run = run_dag("migration_execute", {"migration_file": uri})
    assert str(dag_run.state) == "success", task_states(dag_run)

    folder = log_folder(dag_run)
    assert sorted(p.name for p in folder.iterdir()) == [
        "data.sql",
        "migration.json",
        "migration.log",
        "schema.sql",
        "summary.json",
    ]
    record = run_record(folder)
    assert record["status"] == "success" and record["dag_id"] == "migration_execute"
    assert record["run_id"] == dag_run.run_id and record["run_type"] == "manual"
    file_path = Path(uri.removeprefix("file://"))
    assert record["migration_file"]["id"] == record["migration_id"] == file_path.stem
    assert record["migration_file"]["sha256"] == hashlib.sha256(file_path.read_bytes()).hexdigest()
    assert record["target"]["conn_id"] == "migration_target"
    assert record["target"]["database"] == target.rsplit("/", 1)[1]
    assert "password" not in json.dumps(record["target"])

    steps = _steps(record)
    states = task_states(dag_run)
    for task_id in states:
        names = [n for n in steps if n == task_id or n.startswith(f"{task_id}[")]
        assert names, f"no step recorded for {task_id}"
    for name in ("env_check", "plan", "env_values", "plugin_check", "collect_logs"):
        step = steps[name]
        assert step["status"] == "success", (name, step)
        assert step["attempt"] == 1 and step["start"] <= step["end"], (name, step)
    # no environment value to write: plugin_check had the scheduler skip env_write
    assert steps["env_write"]["status"] == "skipped" and steps["env_write"]["start"] is None
    assert steps["env_write"]["note"] == "No environment variables to write"
    applied = {n: s for n, s in steps.items() if n.startswith("apply_table[")}
    assert set(applied) == {"apply_table[orders (upsert)]", "apply_table[uiSchemas (overwrite)]"}
    orders = applied["apply_table[orders (upsert)]"]["outcome"]["tables"][0]
    assert (orders["inserted"], orders["updated"], orders["ddl"]) == (49, 1, 2)
    assert steps["env_check"]["outcome"]["missing_env"] == []
    differences = {d["table"]: d["changes"] for d in steps["plan"]["outcome"]["differences"]}
    assert any("tags" in c for c in differences["orders"]), differences
    assert record["differences"] == steps["plan"]["outcome"]["differences"]
    chain = [steps[n]["start"] for n in ("env_check", "plan", "plugin_check", "collect_logs")]
    assert chain == sorted(chain), "each step started after the one before it"
    assert [s["task_id"] for s in record["steps"]][:2] == ["env_check", "plan"]  # the DAG's order

    text = (folder / "migration.log").read_text()
    assert text.startswith(f"Migration {record['migration_id']}: SUCCESS")
    for name in steps:
        assert name in text, name

    # schema.sql: every DDL in order, grouped by table, and it runs: on a copy of the target as
    # it was, it gives the migrated structure
    schema = (folder / "schema.sql").read_text()
    assert (
        schema.index("-- Table orders:")
        < schema.index("ADD COLUMN tags")
        < schema.index("CREATE INDEX orders_tags")
    )
    replay = new_db()
    sql(replay, TARGET_DDL)
    out = subprocess.run(
        [
            psql_bin(),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            replay,
            "-f",
            str(folder / "schema.sql"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    for table in ("orders", "uiSchemas"):
        assert _columns(replay, table) == _columns(target, table), table
    # data.sql: shapes, no values
    data = (folder / "data.sql").read_text()
    assert "FROM STDIN (FORMAT binary)" in data
    assert "tag-value-" not in data and "tag-value-" not in text


def test_failed_run_is_logged(source: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sql(
        source,
        """
        CREATE TABLE good (id int PRIMARY KEY, v text); INSERT INTO good VALUES (1, 'x');
        CREATE TABLE bad (id int PRIMARY KEY, v text); INSERT INTO bad VALUES (1, 'one');
        """,
    )
    # the target's extra NOT NULL column (kept: dropping is off) cannot take the source's rows
    sql(target, "CREATE TABLE bad (id int PRIMARY KEY, v text, extra text NOT NULL);")
    set_connections(monkeypatch, migration_source=source, migration_target=target)
    dag_run = run_dag(
        "migration_sync",
        {"profile": "generic", "rules": {"user": {"default": "overwrite"}}, "skip_backup": True},
    )
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["collect_logs"] == ["failed"]
    record = run_record(log_folder(dag_run))
    assert record["status"] == "failed"
    assert record["failed_units"][0]["tables"] == ["bad"]
    steps = _steps(record)
    bad = steps["apply_table[bad (overwrite)]"]
    assert bad["status"] == "failed" and bad["attempt"] == 1  # terminal: not retried
    assert 'null value in column "extra"' in bad["error"]
    assert steps["apply_table[good (overwrite)]"]["status"] == "success"
    assert steps["create_migration_file"]["status"] == "success"
    assert steps["collect_logs"]["status"] == "failed"
    # skipped by the scheduler on plugin_check's word (no task process): the log says why
    assert steps["backup"]["status"] == "skipped" and steps["backup"]["start"] is None
    assert steps["backup"]["note"].startswith("skip_backup is set: no backup is taken")
    assert steps["env_write"]["status"] == "skipped"
    assert steps["env_write"]["note"] == "No environment variables to write"
    assert record["source"]["conn_id"] == "migration_source"
    assert any('column "extra"' in e for e in record["errors"])
    text = (log_folder(dag_run) / "migration.log").read_text()
    assert "! apply_table[bad (overwrite)]: " in text and "FAILED" in text.splitlines()[0]
    assert "skip_backup is set: no backup is taken" in text


def test_run_stopped_by_the_checks_is_logged(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(
        source,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);"
        # what makes it a NocoBase database to the nocobase profile
        'CREATE TABLE "applicationPlugins" (id serial PRIMARY KEY, name text, "packageName" text,'
        " version text, enabled boolean);",
    )
    set_connections(monkeypatch, migration_source=source, migration_target=target)
    created = run_dag("migration_create", {"profile": "nocobase"})  # generic checks no setting
    uri = xcom(created, "create_migration_file")
    from tests.airflowtools import connection_uri

    monkeypatch.setenv(
        "AIRFLOW_CONN_MIGRATION_TARGET", connection_uri(target, {"DB_TABLE_PREFIX": "nb_"})
    )
    dag_run = run_dag("migration_execute", {"migration_file": uri})
    assert str(dag_run.state) == "failed"
    folder = log_folder(dag_run)
    assert folder.parent.name == Path(uri).stem  # filed under the migration's id, from the file
    record = run_record(folder)
    steps = _steps(record)
    assert record["status"] == "failed" and record["tables"] == []
    assert (
        steps["env_check"]["status"] == "failed"
        and "DB_TABLE_PREFIX" in steps["env_check"]["error"]
    )
    assert steps["plan"]["status"] == "upstream_failed" and steps["plan"]["start"] is None
    assert "the run stopped before the plan" in (folder / "migration.log").read_text()
    assert "No schema statement was executed" in (folder / "schema.sql").read_text()


def test_secret_values_never_reach_the_log(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    dag_run = run_dag(
        "migration_sync",
        {
            "env_values": {"HELPDESK_URL": HELPDESK_URL, "HELPDESK_KEY": HELPDESK_SECRET},
            "on_missing_plugins": "continue",
        },
    )
    assert str(dag_run.state) == "success", task_states(dag_run)
    stored = rows(
        prod, 'SELECT value FROM "environmentVariables" WHERE name = %s', ("HELPDESK_KEY",)
    )
    ciphertext = stored[0][0]
    folder = log_folder(dag_run)
    for path in folder.iterdir():
        text = path.read_text()
        assert HELPDESK_SECRET not in text, path.name
        assert ciphertext not in text, path.name  # not even encrypted
        assert HELPDESK_URL not in text, path.name  # values are not recorded, plain ones neither
    record = run_record(folder)
    assert record["params"]["env_values"] == ["HELPDESK_KEY", "HELPDESK_URL"]
    supplied = record["checks"]["env_values"]["supplied"]
    assert {"name": "HELPDESK_KEY", "type": "secret"} in supplied
    assert record["checks"]["plugin_check"]["missing"][0]["name"] == "graph-collection-manager"


def test_a_finished_run_never_shows_hold_target_lock_running() -> None:
    """collect_logs writes the record while hold_target_lock still holds the lock (it lets go
    once every writer, collect_logs too, has finished): the record shows it ended, not running."""
    from types import SimpleNamespace

    from migration_manager.airflow.run_log import STEP_KEY, gather_steps

    pushed = [
        {"task_id": "hold_target_lock", "map_index": -1, "status": "running", "start": None},
        {"task_id": "backup", "map_index": -1, "status": "success"},
    ]

    def xcom_pull(task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return pushed if key == STEP_KEY else None

    ti = SimpleNamespace(task_id="collect_logs", map_index=-1, xcom_pull=xcom_pull)
    dag = SimpleNamespace(task_ids=["hold_target_lock", "backup", "collect_logs", "apply_table"])
    states = {
        ("hold_target_lock", -1): "running",
        ("backup", -1): "running",  # a task still running that is not the lock's holder
        ("collect_logs", -1): "running",
    }
    steps = {
        s.task_id: s
        for s in gather_steps(
            {"ti": ti, "dag": dag}, report=None, results=[], final_status="success", states=states
        )
    }
    assert steps["hold_target_lock"].status == "success" and steps["hold_target_lock"].end
    assert "released as the run ends" in str(steps["hold_target_lock"].note)
    assert steps["collect_logs"].status == "success"
    assert steps["backup"].status == "running"  # only the holder is known to end with the run
