"""End to end against a running Airflow (``bin/airflow-local``, LocalExecutor), through the REST API.

One Airflow for the module: api-server, scheduler, dag-processor and triggerer on loopback,
metadata in a fresh database of the local PostgreSQL. Each test triggers runs as the UI does
and asserts the target databases' final state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import psycopg
import pytest

from migration_manager.target_lock import owner
from tests.e2e.airflowapi import Airflow, instance_processes, running_airflow, wait_for
from tests.pgtools import FIXTURES, load_dump, rows, scalar, sql, table_text

PROD_KEY = (FIXTURES / "dev_prod_aes_key.dat").read_bytes()
PIPELINES = """\
pipelines:
  - name: e2e_nightly
    source_conn_id: e2e_pipe_source
    target_conn_id: e2e_pipe_target
    profile: generic
    schedule: "0 3 * * *"
    rules: {user: {default: overwrite}}
    options: {backup: false, rollback: false, on_missing_plugins: continue, on_destructive: continue}
  - name: e2e_hourly
    source_conn_id: e2e_pipe_source
    target_conn_id: e2e_pipe_target
    profile: generic
    schedule: "@hourly"
"""
GENERIC = {"profile": "generic", "rules": {"user": {"default": "overwrite"}}}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    tmp = tmp_path_factory.mktemp("e2e-local")
    pipelines = tmp / "pipelines.yaml"
    pipelines.write_text(PIPELINES)
    env = {"MIGRATION_PIPELINES": str(pipelines), "MM_LOCK_TIMEOUT": "180s"}
    with running_airflow(tmp, env=env) as instance:
        yield instance


def _small_source(dsn: str, extra: str = "") -> None:
    sql(
        dsn,
        """
        CREATE TABLE a (id int PRIMARY KEY, v text);
        CREATE TABLE b (id int PRIMARY KEY, v integer);
        CREATE TABLE c (id int PRIMARY KEY, v text);
        INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 50) g;
        INSERT INTO b SELECT g, g * 10 FROM generate_series(1, 50) g;
        INSERT INTO c SELECT g, 'c' || g FROM generate_series(1, 50) g;
        """
        + extra,
    )


def _xmins(dsn: str, table: str) -> list[tuple[Any, ...]]:
    return rows(dsn, f"SELECT id, xmin::text FROM {table} ORDER BY id")


def _units(airflow: Airflow, run_id: str) -> dict[str, dict[str, Any]]:
    """apply_table's task instances by table: with as many units as max_apply_tasks or fewer
    (here 3 units, the default 4 tasks), each unit keeps a task of its own, whose map index is
    named "<table> (<rule>)" (a packed task's names its tables: test_many_tables_pack_...)."""
    return {
        ti["rendered_map_index"].split(" ")[0]: ti
        for ti in airflow.task_instances("migration_sync", run_id)
        if ti["task_id"] == "apply_table"
    }


def test_only_loopback_listeners(airflow: Airflow) -> None:
    members = instance_processes(airflow.home)
    assert members, "no process of the running Airflow found"
    listening = []
    for proc in members:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                listening.append((proc.name(), conn.laddr.ip, conn.laddr.port))
    assert listening, "the api-server should listen on loopback"
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in listening), listening


def test_sync_with_prompt_answered_through_the_api(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    staging, prod = new_db(), new_db()
    load_dump(staging, FIXTURES / "dev_staging.sql")
    load_dump(prod, FIXTURES / "dev_prod.sql")
    airflow.set_connection("e2e_staging", staging)
    airflow.set_connection("e2e_prod", prod, {"app_env": {"APP_AES_SECRET_KEY": PROD_KEY.hex()}})
    prod_users = rows(prod, "SELECT id, username FROM users ORDER BY id")
    airflow.unpause("migration_sync")
    run_id = airflow.trigger(
        "migration_sync",
        {
            "source_conn_id": "e2e_staging",
            "target_conn_id": "e2e_prod",
            "env_values": {"HELPDESK_URL": "https://helpdesk.invalid", "HELPDESK_KEY": "k-123"},
            "on_missing_plugins": "ask",
            "on_destructive": "continue",
            # a few units (each is a task process): overwrite two tables, sync the others' structure
            "rules": {
                "system": {
                    "default": "schema-only",
                    "independent": {"uiSchemas": "overwrite", "systemSettings": "overwrite"},
                }
            },
        },
    )
    # prod lacks the graph-collection-manager plugin: the run waits for a human
    asked = airflow.answer(
        "migration_sync", run_id, "plugin_check", {"chosen_options": ["Continue anyway"]}
    )
    assert asked["options"] == ["Continue anyway", "Stop the migration"]
    assert "graph-collection-manager" in (asked.get("body") or "")

    assert airflow.wait_for_run("migration_sync", run_id) == "success", airflow.explain(
        "migration_sync", run_id
    )
    decision = airflow.call(
        "GET",
        f"/dags/migration_sync/dagRuns/{run_id}/taskInstances/plugin_check/xcomEntries/return_value",
    )["value"]
    assert decision["decision"] == "continue (prompt)" and decision["decided_by"] == "admin"
    for table in ("uiSchemas", "systemSettings"):
        assert table_text(prod, table) == table_text(staging, table), table
    # schema-only: prod's own users stay (with staging's new columns)
    assert rows(prod, "SELECT id, username FROM users ORDER BY id") == prod_users
    assert scalar(
        prod, """SELECT value FROM "environmentVariables" WHERE name = 'HELPDESK_URL'"""
    ) == ("https://helpdesk.invalid")
    states = airflow.states("migration_sync", run_id)
    assert states["hold_target_lock"] == states["target_locked"] == "success"


def test_invalid_conf_is_refused_with_the_validation_message(airflow: Airflow) -> None:
    answer = airflow.client.post(
        "/api/v2/dags/migration_sync/dagRuns",
        json={"logical_date": None, "conf": {"profile": "wordpress"}},
    )
    assert answer.status_code == 400, answer.text
    assert "wordpress" in answer.text and "is not one of" in answer.text
    answer = airflow.client.post(
        "/api/v2/dags/migration_sync/dagRuns",
        json={"logical_date": None, "conf": {"rules": {"user": {"default": "copy-all"}}}},
    )
    assert answer.status_code == 400 and "copy-all" in answer.text, answer.text


def test_retry_one_table_alone(airflow: Airflow, new_db: Callable[[], str]) -> None:
    source, target = new_db(), new_db()
    _small_source(source)
    # the cause of b's failure: the target's b.v is text holding a value that is no integer
    sql(target, "CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b VALUES (1, 'n/a')")
    airflow.set_connection("e2e_retry_source", source)
    airflow.set_connection("e2e_retry_target", target)
    conf = {
        **GENERIC,
        "source_conn_id": "e2e_retry_source",
        "target_conn_id": "e2e_retry_target",
        "skip_backup": True,
        "rollback_on_failure": False,
        "on_missing_plugins": "continue",
        "on_destructive": "continue",
    }
    airflow.unpause("migration_sync")
    run_id = airflow.trigger("migration_sync", conf)
    assert airflow.wait_for_run("migration_sync", run_id) == "failed"
    units = _units(airflow, run_id)
    assert {k: v["state"] for k, v in units.items()} == {
        "a": "success",
        "b": "failed",
        "c": "success",
    }
    before = {t: _xmins(target, t) for t in ("a", "c")}

    sql(target, "UPDATE b SET v = '7'")  # remove the cause
    body = {
        "dag_run_id": run_id,
        "task_ids": [["apply_table", units["b"]["map_index"]]],
        "only_failed": False,
        "include_downstream": True,
        "reset_dag_runs": True,
    }
    preview = airflow.call(
        "POST", "/dags/migration_sync/clearTaskInstances", json={**body, "dry_run": True}
    )
    cleared = sorted((t["task_id"], t["map_index"]) for t in preview["task_instances"])
    assert ("apply_table", units["b"]["map_index"]) in cleared
    assert [c for c in cleared if c[0] == "apply_table"] == [
        ("apply_table", units["b"]["map_index"])
    ]
    airflow.call("POST", "/dags/migration_sync/clearTaskInstances", json={**body, "dry_run": False})

    assert airflow.wait_for_run("migration_sync", run_id) == "success", airflow.explain(
        "migration_sync", run_id
    )
    after = _units(airflow, run_id)
    assert after["b"]["state"] == "success" and after["b"]["try_number"] > units["b"]["try_number"]
    for name in ("a", "c"):
        assert after[name]["try_number"] == units[name]["try_number"], name
    assert {t: _xmins(target, t) for t in ("a", "c")} == before  # not re-applied
    assert table_text(target, "b") == table_text(source, "b")
    log = airflow.log(
        "migration_sync", run_id, "apply_table", after["b"]["try_number"], after["b"]["map_index"]
    )
    assert "taken by this task for its own writes" in log  # the run's lock holder was gone


def test_many_tables_pack_into_few_tasks_and_sync_exactly(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    """60 small tables: four apply_table tasks (the default for the pool's 2 slots), each
    named after its tables, every table applied with the source's exact content."""
    source, target = new_db(), new_db()
    count = 60
    sql(
        source,
        f"""DO $$ BEGIN FOR i IN 1..{count} LOOP
              EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, v text, n integer)',
                             't' || lpad(i::text, 2, '0'));
              EXECUTE format('INSERT INTO %I SELECT g, ''v'' || g, g * %s
                              FROM generate_series(1, 25) g', 't' || lpad(i::text, 2, '0'), i);
            END LOOP; END $$;""",
    )
    airflow.set_connection("e2e_many_source", source)
    airflow.set_connection("e2e_many_target", target)
    airflow.unpause("migration_sync")
    run_id = airflow.trigger(
        "migration_sync",
        {
            **GENERIC,
            "source_conn_id": "e2e_many_source",
            "target_conn_id": "e2e_many_target",
            "on_missing_plugins": "continue",
            "on_destructive": "continue",
        },
    )
    assert airflow.wait_for_run("migration_sync", run_id) == "success", airflow.explain(
        "migration_sync", run_id
    )
    tasks = [
        ti
        for ti in airflow.task_instances("migration_sync", run_id)
        if ti["task_id"] == "apply_table"
    ]
    assert len(tasks) == 4 and all(ti["state"] == "success" for ti in tasks)
    names = sorted(ti["rendered_map_index"] for ti in tasks)
    assert all(n.startswith("t") and n.endswith(" more") for n in names), names
    applied = []
    for ti in tasks:
        results = airflow.call(
            "GET",
            f"/dags/migration_sync/dagRuns/{run_id}/taskInstances/apply_table/xcomEntries/"
            "return_value",
            params={"map_index": ti["map_index"]},
        )["value"]
        results = json.loads(results) if isinstance(results, str) else results
        applied += [t["table"] for r in results for t in r["tables"]]
        assert ti["rendered_map_index"].startswith(results[0]["tables"][0]["table"] + ", ")
    assert sorted(applied) == [f"t{i:02d}" for i in range(1, count + 1)]
    for i in range(1, count + 1):
        assert table_text(target, f"t{i:02d}") == table_text(source, f"t{i:02d}")
    done = airflow.call(
        "GET",
        f"/dags/migration_sync/dagRuns/{run_id}/taskInstances/collect_logs/xcomEntries/"
        "return_value",
    )["value"]
    assert done["status"] == "success" and done["totals"]["inserted"] == count * 25


def test_pipelines_are_scheduled_dags(airflow: Airflow) -> None:
    nightly = airflow.wait_for_dag("sync_e2e_nightly")
    hourly = airflow.wait_for_dag("sync_e2e_hourly")
    assert nightly["timetable_summary"] == "0 3 * * *"
    assert hourly["timetable_summary"] in ("@hourly", "0 * * * *")  # the preset, as cron
    details = airflow.call("GET", "/dags/sync_e2e_nightly/details")
    assert details["max_active_runs"] == 1 and details["catchup"] is False
    assert details["params"]["on_missing_plugins"]["value"] == "continue"
    assert details["params"]["skip_backup"]["value"] is True


def test_two_runs_into_one_target_never_overlap(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    source, other_source, target = new_db(), new_db(), new_db()
    _small_source(source)
    _small_source(other_source, "CREATE TABLE z (id int PRIMARY KEY);")
    sql(target, "CREATE TABLE a (id int PRIMARY KEY, v text)")
    airflow.set_connection("e2e_pipe_source", source)
    airflow.set_connection("e2e_pipe_target", target)
    airflow.set_connection("e2e_other_source", other_source)

    # hold table a of the target: the pipeline run's unit for a waits, so its run keeps the lock
    blocker = psycopg.connect(target)
    blocker.execute("LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
    try:
        triggered = airflow.trigger("sync_e2e_nightly", {})
        # unpausing a cron DAG also schedules its latest interval (after 03:00 UTC, a run of
        # today's): whichever pipeline run starts first takes the lock, the other one waits
        airflow.unpause("sync_e2e_nightly")

        def pipeline_holder() -> str | None:
            with psycopg.connect(target, autocommit=True) as conn:
                who = owner(conn)
            if who is None or not who.run.startswith("sync_e2e_nightly/"):
                return None
            return who.run.split("/", 1)[1]

        first = wait_for("a pipeline run to hold the target lock", pipeline_holder, 300)
        airflow.unpause("migration_sync")
        second = airflow.trigger(
            "migration_sync",
            {
                **GENERIC,
                "source_conn_id": "e2e_other_source",
                "target_conn_id": "e2e_pipe_target",
                "skip_backup": True,
                "on_missing_plugins": "continue",
                "on_destructive": "continue",
                "target_lock_timeout": 5,
            },
        )
        assert airflow.wait_for_run("migration_sync", second) == "failed"
        states = airflow.states("migration_sync", second)
        assert states["hold_target_lock"] == "failed"
        assert states["target_locked"] != "success"  # the writers never started
        # skip_backup and no environment value: plugin_check had the scheduler skip both writers
        assert states["backup"] == states["env_write"] == "skipped", states
        assert all(
            s == "upstream_failed" for k, s in states.items() if k.startswith("apply_table")
        ), states
        log = airflow.log("migration_sync", second, "hold_target_lock", 1)
        assert f"locked by migration run sync_e2e_nightly/{first}" in log, log[-3000:]
        assert "z" not in {r[0] for r in rows(target, "SELECT tablename FROM pg_tables")}
        assert airflow.run("sync_e2e_nightly", first)["state"] == "running"
    finally:
        blocker.rollback()
        blocker.close()
    for run_id in dict.fromkeys((first, triggered)):  # the holder, then the one that waited
        assert airflow.wait_for_run("sync_e2e_nightly", run_id) == "success", airflow.states(
            "sync_e2e_nightly", run_id
        )
    for table in ("a", "b", "c"):
        assert table_text(target, table) == table_text(source, table), table
    with psycopg.connect(target, autocommit=True) as conn:
        assert owner(conn) is None  # released with the run
