"""Runs that must not end green: a sync onto its own source, a unit re-applied alone after the
run was rolled back, and more units than Airflow maps by default. ``dag.test()`` runs on real
PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from migration_manager.airflow.store import run_rollback_record
from migration_manager.backup.fingerprints import table_fingerprints
from tests.airflowtools import connection_uri, metadata_db, rerun_cleared, task_states, xcom
from tests.integration.dagrun_tools import (
    FAILING_SOURCE,
    FAILING_TARGET,
    Logs,
    failing_sync,
    target_conn_id,
)
from tests.pgtools import REPO, make_file, rows, sql, table_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]


def _store_files() -> list[str]:
    folder = Path(os.environ["MIGRATION_STORE"].removeprefix("file://")) / "files"
    return sorted(p.name for p in folder.glob("*.zip")) if folder.exists() else []


def test_a_sync_onto_its_own_source_database_is_refused_before_anything_runs(
    source: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """Two connection ids, two spellings of the host (127.0.0.1 and localhost): one database."""
    sql(source, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');")
    source_id = "mm_same_source"
    monkeypatch.setenv(f"AIRFLOW_CONN_{source_id.upper()}", connection_uri(source))
    target_id = target_conn_id(monkeypatch, source.replace("127.0.0.1", "localhost"))
    before, files = table_fingerprints(source), _store_files()

    dag_run = logs.run(
        "migration_sync",
        {"profile": "generic", "source_conn_id": source_id, "target_conn_id": target_id},
    )

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["create_migration_file"] == ["failed"]
    # nothing after it ran: no plan, no backup, no unit; app_restart (ALL_DONE) only says that
    # nothing was written, so no restart is needed
    doers = {k: s for k, s in states.items() if k not in ("create_migration_file", "app_restart")}
    assert all(s[0] != "success" for s in doers.values()), states
    assert xcom(dag_run, "app_restart")["status"] == "not needed"
    assert "apply_table" not in states or states["apply_table"] != ["success"]
    message = logs.task("create_migration_file")
    assert f"source connection '{source_id}'" in logs.text
    assert f"target connection '{target_id}'" in logs.text
    assert "lead to the same database" in logs.text and "create_migration_file" in message
    assert _store_files() == files  # no migration file was written
    assert table_fingerprints(source) == before


def test_executing_a_file_on_its_own_source_database_is_refused_before_anything_runs(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """migration_execute with a file whose source is the target: the manifest's source identity
    (server system_identifier, database OID and name) equals the target's, whatever the host is
    called (the file was read through 127.0.0.1, the target connection says localhost)."""
    sql(
        source,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    )
    path = tmp_path / "own-source.zip"
    manifest = make_file(source, path, profile="generic", rules={"user": {"default": "overwrite"}})
    identity = manifest["source"]["identity"]
    oid, name, sysid = rows(
        source,
        "SELECT d.oid::bigint, d.datname, (SELECT system_identifier::text FROM pg_control_system())"
        " FROM pg_database d WHERE d.datname = current_database()",
    )[0]
    assert identity["database_oid"] == oid and identity["database"] == name
    assert identity["system_identifier"] == sysid
    assert "password" not in json.dumps(manifest["source"]).lower()
    # the file was made by the session's trusted key, so only the identity can refuse it
    target_id = target_conn_id(monkeypatch, source.replace("127.0.0.1", "localhost"))
    sql(source, "UPDATE t SET v = 'changed after the file was made'")
    before = table_fingerprints(source)

    dag_run = logs.run(
        "migration_execute", {"migration_file": str(path), "target_conn_id": target_id}
    )

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["env_check"] == ["failed"]  # the first task
    for task in ("plan", "backup", "env_write"):
        assert states[task] == ["upstream_failed"], (task, states)
    message = logs.task("env_check")
    assert f"Migration file {path}" in logs.text and "was created from database" in logs.text
    assert f"target connection '{target_id}' leads to that same database" in logs.text
    assert f"server {sysid}" in logs.text and "choose the target the file is meant for" in logs.text
    assert "env_check" in message
    assert table_fingerprints(source) == before  # nothing written: the later update is kept
    assert rows(source, "SELECT v FROM t ORDER BY id") == [
        ("changed after the file was made",),
        ("changed after the file was made",),
    ]


def test_a_cleared_unit_of_a_rolled_back_run_refuses_to_apply_alone(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """After the automatic rollback, clearing one apply_table map index (here the unit that
    had succeeded, `good`) used to apply it alone to the restored target. It must refuse, say to
    run the whole migration again, leave the target as the rollback left it, and the run failed."""
    sql(source, FAILING_SOURCE)
    sql(target, FAILING_TARGET)
    before = table_fingerprints(target)
    dag_run, conn_id = failing_sync(source, target, monkeypatch, logs)
    rollback = xcom(dag_run, "rollback")
    assert rollback["status"] == "rolled back"
    backup_id = rollback["backup_id"]
    assert table_fingerprints(target) == before
    good = next(
        i
        for i in range(3)
        # each task's return value: one result per unit (3 units: one task each)
        if [t["table"] for r in xcom(dag_run, "apply_table", i) or [] for t in r["tables"]]
        == ["good"]
    )

    # cleared with its downstream tasks: the rollback task's XCom goes, the store's record stays
    logs.capfd.readouterr()
    again = rerun_cleared(dag_run, ("apply_table", good), ("rollback", -1), ("collect_logs", -1))

    assert str(again.state) == "failed"
    recorded = run_rollback_record(dag_run.dag_id, dag_run.run_id)
    assert recorded is not None and recorded.backup_id == backup_id
    assert table_fingerprints(target) == before
    assert table_text(target, "good")[0] == '(1,"target 1")'  # the target's rows, not the source's
    out = logs.capfd.readouterr()
    text = out.out + out.err + logs.caplog.text
    assert "was rolled back to backup" in text and "run the whole migration again" in text
    states = task_states(again)
    assert sorted(states["apply_table"]) == ["failed", "failed", "success"]
    assert states["collect_logs"] == ["failed"]


def _many_tables(dsn: str, count: int) -> None:
    sql(
        dsn,
        f"""DO $$ BEGIN FOR i IN 1..{count} LOOP
              EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, v text)', 't' || i);
              EXECUTE format('INSERT INTO %I VALUES (1, %L)', 't' || i, 'row of ' || i);
            END LOOP; END $$;""",
    )


def test_more_units_than_airflow_s_default_map_length_fan_out(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """1,100 one-table units: with Airflow's default core.max_map_length (1024) the plan's XCom
    push is refused by the execution API and nothing fans out; the project raises it (16384,
    like bin/airflow, bin/airflow-local, docker-compose.yaml).

    Real create, plan, XCom push through the execution API and expansion into 1,100 map
    indexes; the units themselves are marked success (``mark_success_pattern``) to keep the test
    short: applying them all through ``dag.test()`` took 18 min here (about 1 s per unit on a
    shared 2-core machine), and a unit's apply is what every other test exercises.
    """
    count = 1100
    _many_tables(source, count)
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source))
    conn_id = target_conn_id(monkeypatch, target)
    assert os.environ["AIRFLOW__CORE__MAX_MAP_LENGTH"] == "16384"  # tests/conftest.py
    from airflow.dag_processing.dagbag import DagBag

    metadata_db()
    dag = DagBag(dag_folder=str(REPO / "dags" / "migration_sync.py")).dags["migration_sync"]
    started = time.monotonic()
    dag_run = dag.test(
        run_conf={
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "target_conn_id": conn_id,
            "skip_backup": True,
            "max_apply_tasks": count,  # one task per unit: no packing (tests/unit/test_packing)
        },
        mark_success_pattern="apply_table|collect_logs",
    )
    seconds = time.monotonic() - started
    states = task_states(dag_run)
    print(f"1,100 units planned and fanned out in {seconds:.0f} s")
    assert str(dag_run.state) == "success", {k: set(v) for k, v in states.items()}
    assert states["plan"] == ["success"]
    assert len(xcom(dag_run, "plan")) == count
    assert states["apply_table"] == ["success"] * count


def test_the_plan_names_the_map_limit_when_a_migration_exceeds_it(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """With Airflow's default (1024) and 1,030 units, the plan fails with a message naming the
    setting, before anything is written (not Airflow's own error at the fan-out)."""
    _many_tables(source, 1030)
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "1024")
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source))
    conn_id = target_conn_id(monkeypatch, target)
    dag_run = logs.run(
        "migration_sync",
        {
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "target_conn_id": conn_id,
            "max_apply_tasks": 1030,  # one task per unit: no packing
        },
    )
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["plan"] == ["failed"]
    assert "1030 apply_table tasks" in logs.text and "AIRFLOW__CORE__MAX_MAP_LENGTH" in logs.text
    assert table_fingerprints(target) == {}
