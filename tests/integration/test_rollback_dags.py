"""Backup before a migration, rollback when a unit fails, and migration_rollback: ``dag.test()`` runs.

Each test uses its own target connection id, so its backups have their own folder in the store.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_manager.backup.fingerprints import table_fingerprints
from tests.airflowtools import connection_uri, summaries, task_states, xcom
from tests.integration.dagrun_tools import (
    FAILING_SOURCE,
    FAILING_TARGET,
    OVERWRITE_ALL,
    PROD_KEY,
    Logs,
    failing_sync,
    target_conn_id,
)
from tests.pgtools import drop_database, dsn_for, rows, scalar, sql, table_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]


def _backup_folder(conn_id: str) -> Path:
    return Path(os.environ["MIGRATION_STORE"].removeprefix("file://")) / "backups" / conn_id


def _backup_ids(conn_id: str) -> list[str]:
    folder = _backup_folder(conn_id)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []


def _summary(dag_run: Any) -> dict[str, Any]:
    found = [s for s in summaries() if s.get("run_id") == dag_run.run_id]
    assert found, "collect_logs wrote no summary for this run"
    return found[-1]


def test_a_failed_unit_rolls_the_whole_target_back(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    sql(source, FAILING_SOURCE)
    sql(target, FAILING_TARGET)
    before = table_fingerprints(target)
    texts = {t.split(".")[1]: table_text(target, t.split(".")[1]) for t in before}
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source))
    conn_id = target_conn_id(monkeypatch, target)

    dag_run = logs.run("migration_sync", {**OVERWRITE_ALL, "target_conn_id": conn_id})

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["backup"] == ["success"]
    assert sorted(states["apply_table"]) == ["failed", "success", "success"]  # bad; good, fresh
    assert states["rollback"] == ["success"]
    assert states["collect_logs"] == ["failed"]
    # the app must reload after the rollback too; this connection names no app_url
    restart = xcom(dag_run, "app_restart")
    assert (restart["status"], restart["after"]) == ("restart needed", "rollback")
    # every table, touched or not: same rows and content as before the run; `fresh` is gone
    assert table_fingerprints(target) == before
    assert {t.split(".")[1]: table_text(target, t.split(".")[1]) for t in before} == texts
    assert scalar(target, "SELECT to_regclass('public.fresh')") is None
    (backup_id,) = _backup_ids(conn_id)
    outcome = xcom(dag_run, "rollback")
    assert outcome["status"] == "rolled back" and outcome["backup_id"] == backup_id
    assert outcome["removed"] == ["public.fresh"]
    summary = _summary(dag_run)
    assert summary["status"] == "failed" and summary["failed_units"][0]["tables"] == ["bad"]
    assert summary["rollback"]["status"] == "rolled back"
    assert summary["backup"]["backup_id"] == backup_id
    assert "Rolled back: the target is back at backup " + backup_id in logs.task(
        "RollbackOperator]"
    )
    assert f"rolled back to backup {backup_id}" in logs.text
    # the record beside the dump: pre-migration fingerprints and who took it
    record = json.loads((_backup_folder(conn_id) / f"{backup_id}.json").read_text())
    assert record["run_id"] == dag_run.run_id and record["target_conn_id"] == conn_id
    assert record["migration_id"] == summary["migration_id"]
    assert {k: tuple(v) for k, v in record["fingerprints"].items()} == before


def test_no_rollback_without_failure(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    sql(source, "CREATE TABLE good (id int PRIMARY KEY, v text); INSERT INTO good VALUES (1, 'x')")
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source))
    conn_id = target_conn_id(monkeypatch, target)
    conf = {"profile": "generic", "target_conn_id": conn_id}  # user tables: schema-only
    dag_run = logs.run("migration_sync", conf)
    assert str(dag_run.state) == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert states["backup"] == ["success"] and states["rollback"] == ["skipped"]
    assert len(_backup_ids(conn_id)) == 1
    assert scalar(target, "SELECT count(*) FROM good") == 0
    # nothing to apply the second time: nothing is written, no backup is needed
    again = logs.run("migration_sync", conf)
    assert str(again.state) == "success"
    assert task_states(again)["backup"] == ["skipped"]  # plugin_check: nothing to apply
    assert "Nothing to apply" in logs.task("PluginCheckOperator]")
    assert len(_backup_ids(conn_id)) == 1


def test_skip_backup(source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs) -> None:
    sql(source, FAILING_SOURCE)
    sql(target, FAILING_TARGET)
    dag_run, conn_id = failing_sync(source, target, monkeypatch, logs, skip_backup=True)
    states = task_states(dag_run)
    # plugin_check had the scheduler skip the backup (and env_write: no value to write); the
    # units ran all the same, and rollback still reports that there is nothing to restore
    assert states["backup"] == ["skipped"] and states["env_write"] == ["skipped"]
    assert sorted(states["apply_table"]) == ["failed", "success", "success"]
    assert states["rollback"] == ["success"]
    assert _backup_ids(conn_id) == []
    said = logs.task("PluginCheckOperator]")
    assert "Skipping backup: skip_backup is set: no backup is taken" in said
    assert "Skipping env_write: No environment variables to write" in said
    assert "BackupOperator]" not in logs.text and "EnvWriteOperator]" not in logs.text
    outcome = _summary(dag_run)["rollback"]
    assert outcome["status"] == "not rolled back" and outcome["backup_id"] is None
    assert "skip_backup" in outcome["reason"]
    # units that succeeded stay applied; the failed one was rolled back by its own transaction
    assert table_text(target, "fresh") == ['(1,"new in the source")']
    assert table_text(target, "bad") == ["(7,seven)"]


def test_rollback_off_then_migration_rollback_in_place(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    sql(source, FAILING_SOURCE)
    sql(target, FAILING_TARGET)
    before = table_fingerprints(target)
    dag_run, conn_id = failing_sync(source, target, monkeypatch, logs, rollback_on_failure=False)
    (backup_id,) = _backup_ids(conn_id)
    outcome = _summary(dag_run)["rollback"]
    assert outcome["status"] == "not rolled back" and outcome["backup_id"] == backup_id
    assert (
        backup_id in outcome["restore_by_hand"]
        and "migration_rollback" in outcome["restore_by_hand"]
    )
    assert f"Backup {backup_id} holds the state before this run" in logs.text
    assert table_fingerprints(target) != before  # good and fresh were applied

    # no backup_id: the run lists the backups and fails
    listing = logs.run("migration_rollback", {"target_conn_id": conn_id})
    assert str(listing.state) == "failed"
    assert backup_id in logs.task("RestoreBackupOperator]")
    assert table_fingerprints(target) != before

    # another client is connected: refused, then forced
    with psycopg.connect(target, application_name="the-app"):
        refused = logs.run(
            "migration_rollback", {"target_conn_id": conn_id, "backup_id": backup_id}
        )
        assert str(refused.state) == "failed"
        text = logs.text
        assert "other client(s) are connected" in text and "the-app" in text
        assert table_fingerprints(target) != before
        forced = logs.run(
            "migration_rollback", {"target_conn_id": conn_id, "backup_id": backup_id, "force": True}
        )
        assert str(forced.state) == "success", task_states(forced)
    assert table_fingerprints(target) == before
    assert scalar(target, "SELECT to_regclass('public.fresh')") is None
    assert xcom(forced, "restore")["tables"] == len(before)

    # without force and nobody connected it restores too (idempotent)
    plain = logs.run("migration_rollback", {"target_conn_id": conn_id, "backup_id": backup_id})
    assert str(plain.state) == "success"
    assert table_fingerprints(target) == before


def test_migration_rollback_into_a_new_database(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    sql(source, FAILING_SOURCE)
    sql(target, FAILING_TARGET)
    before = table_fingerprints(target)
    dag_run, conn_id = failing_sync(source, target, monkeypatch, logs, rollback_on_failure=False)
    (backup_id,) = _backup_ids(conn_id)
    failed_state = table_fingerprints(target)
    name = f"mmtest_green_{uuid.uuid4().hex[:8]}"
    try:
        # other clients on the current database do not matter: it is left alone
        with psycopg.connect(target, application_name="the-app"):
            run = logs.run(
                "migration_rollback",
                {
                    "target_conn_id": conn_id,
                    "backup_id": backup_id,
                    "mode": "new_database",
                    "new_database_name": name,
                },
            )
        assert str(run.state) == "success", task_states(run)
        assert table_fingerprints(dsn_for(name)) == before
        assert table_fingerprints(target) == failed_state
        assert xcom(run, "restore")["database"] == name
        # the name is taken now: refused, nothing changes
        again = logs.run(
            "migration_rollback",
            {
                "target_conn_id": conn_id,
                "backup_id": backup_id,
                "mode": "new_database",
                "new_database_name": name,
                "force": True,
            },
        )
        assert str(again.state) == "failed"
        assert "already exists" in logs.text
    finally:
        drop_database(name)


def _store_backup(dsn: str, conn_id: str, **meta: Any) -> str:
    from migration_manager.airflow.store import save_backup

    record, _ = save_backup(dsn, conn_id, keep=10, target_conn_id=conn_id, **meta)
    return record.backup_id


def test_migration_rollback_refuses_another_server_major_and_a_damaged_backup(
    target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    sql(target, FAILING_TARGET)
    before = table_fingerprints(target)
    conn_id = target_conn_id(monkeypatch, target)
    backup_id = _store_backup(target, conn_id)
    sql(target, "DELETE FROM good; CREATE TABLE later (x int)")
    changed = table_fingerprints(target)
    record_path = _backup_folder(conn_id) / f"{backup_id}.json"
    record = json.loads(record_path.read_text())
    conf = {"target_conn_id": conn_id, "backup_id": backup_id}

    record_path.write_text(json.dumps({**record, "server_version": "14.10"}))
    refused = logs.run("migration_rollback", conf)
    assert str(refused.state) == "failed"
    assert "server version" in logs.text
    assert table_fingerprints(target) == changed
    forced = logs.run("migration_rollback", {**conf, "force": True})
    assert str(forced.state) == "success", task_states(forced)
    assert table_fingerprints(target) == before

    record_path.write_text(json.dumps(record))
    sql(target, "DELETE FROM good")
    changed = table_fingerprints(target)
    dump = _backup_folder(conn_id) / f"{backup_id}.dump"
    data = bytearray(dump.read_bytes())
    data[-100] ^= 0x01
    dump.write_bytes(bytes(data))
    damaged = logs.run("migration_rollback", {**conf, "force": True})
    assert str(damaged.state) == "failed"
    assert f"Backup {backup_id} is damaged" in logs.text
    assert table_fingerprints(target) == changed


# --- the real NocoBase fixture --------------------------------------------------------------


def test_nocobase_failed_promotion_leaves_prod_as_it_was(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    staging, prod = nocobase_pair
    # a column both have, whose prod data staging's type cannot take: the users unit fails
    sql(staging, 'ALTER TABLE users ADD COLUMN "employeeNo" integer')
    sql(
        prod,
        'ALTER TABLE users ADD COLUMN "employeeNo" text; UPDATE users SET "employeeNo" = \'E-\' || id',
    )
    before = table_fingerprints(prod)
    assert len(before) == 104
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
    conn_id = target_conn_id(monkeypatch, prod, {"APP_AES_SECRET_KEY": PROD_KEY.hex()})

    dag_run = logs.run(
        "migration_sync",
        {
            "target_conn_id": conn_id,
            "env_values": {"HELPDESK_URL": "https://helpdesk.invalid", "HELPDESK_KEY": "k-123"},
            "on_missing_plugins": "continue",
        },
    )

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    if "env_write" in states:  # the pre-flight checks wrote prod's environmentVariables ...
        assert states["env_write"] == ["success"]
    # the units are packed into 4 tasks: the one holding users fails once its other units
    # are applied, the others succeed; then everything is rolled back
    assert sorted(states["apply_table"]) == ["failed", "success", "success", "success"]
    assert states["rollback"] == ["success"]
    summary = _summary(dag_run)
    assert [u["tables"] for u in summary["failed_units"]] == [["users"]]
    assert summary["rollback"]["status"] == "rolled back"
    # ... and every prod table is as it was: 104 tables, same rows, same content
    assert table_fingerprints(prod) == before
    assert scalar(prod, 'SELECT count(*) FROM "environmentVariables"') == 0
    assert scalar(prod, 'SELECT title FROM "systemSettings"') == "Prod"
    tables = {
        r[0] for r in rows(prod, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert "tickets" not in tables and "graphPositions" not in tables
    record = json.loads(
        (_backup_folder(conn_id) / f"{summary['rollback']['backup_id']}.json").read_text()
    )
    assert record["app_version"] == scalar(prod, 'SELECT value FROM "applicationVersion"')
    assert record["profile"] == "nocobase" and record["app_settings"]["DB_SCHEMA"] == "public"


def test_nocobase_version_alignment(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    _staging, prod = nocobase_pair
    conn_id = target_conn_id(monkeypatch, prod)
    backup_id = _store_backup(prod, conn_id, profile="nocobase")
    before = table_fingerprints(prod)
    version = scalar(prod, 'SELECT value FROM "applicationVersion"')
    sql(prod, 'UPDATE "applicationVersion" SET value = \'2.3.0\'; DELETE FROM "uiSchemas"')
    conf = {"target_conn_id": conn_id, "backup_id": backup_id}
    refused = logs.run("migration_rollback", conf)
    assert str(refused.state) == "failed"
    text = logs.text
    assert "application version" in text and "2.3.0" in text and version in text
    assert scalar(prod, 'SELECT count(*) FROM "uiSchemas"') == 0
    forced = logs.run("migration_rollback", {**conf, "force": True})
    assert str(forced.state) == "success", task_states(forced)
    assert table_fingerprints(prod) == before
    assert scalar(prod, 'SELECT value FROM "applicationVersion"') == version


def test_blue_green(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs, tmp_path: Path
) -> None:
    """PROD-A keeps serving; its backup goes into PROD-B, which is migrated, then traffic switches."""
    from tests.pgtools import make_file

    sql(source, FAILING_SOURCE.replace("bad", "bad_unused"))  # no conflict: the migration succeeds
    sql(target, FAILING_TARGET)
    prod_a = table_fingerprints(target)
    conn_a = target_conn_id(monkeypatch, target)
    safety = logs.run("migration_backup", {"target_conn_id": conn_a, "profile": "generic"})
    assert str(safety.state) == "success", task_states(safety)
    backup_id = xcom(safety, "backup")["backup_id"]

    prod_b = f"mmtest_prod_b_{uuid.uuid4().hex[:8]}"
    try:
        restored = logs.run(
            "migration_rollback",
            {
                "target_conn_id": conn_a,
                "backup_id": backup_id,
                "mode": "new_database",
                "new_database_name": prod_b,
            },
        )
        assert str(restored.state) == "success", task_states(restored)
        conn_b = target_conn_id(monkeypatch, dsn_for(prod_b))
        file = tmp_path / "release.zip"
        make_file(source, file, rules={"user": {"default": "overwrite"}})
        migrated = logs.run(
            "migration_execute", {"migration_file": str(file), "target_conn_id": conn_b}
        )
        assert str(migrated.state) == "success", task_states(migrated)
        assert table_text(dsn_for(prod_b), "good") == table_text(source, "good")
        assert table_text(dsn_for(prod_b), "fresh") == table_text(source, "fresh")
        assert table_fingerprints(target) == prod_a  # PROD-A untouched, ready to switch back to
    finally:
        drop_database(prod_b)


def test_a_backup_waits_for_a_migration_on_its_target(
    target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """migration_backup never catches a migration half done: it takes the target's lock."""
    from migration_manager.target_lock import DagRunRef, hold_run_lock

    sql(target, FAILING_TARGET)
    conn_id = target_conn_id(monkeypatch, target)
    conf = {"target_conn_id": conn_id, "profile": "generic", "target_lock_timeout": 2}
    with hold_run_lock(target, DagRunRef("migration_sync", "nightly-7"), timeout=5):
        refused = logs.run("migration_backup", conf)
    assert str(refused.state) == "failed"
    assert "locked by migration run migration_sync/nightly-7" in logs.text
    assert not _backup_folder(conn_id).exists() or not any(_backup_folder(conn_id).iterdir())
    # once the run has let go, the backup goes through
    taken = logs.run("migration_backup", conf)
    assert str(taken.state) == "success", task_states(taken)
    assert "Target lock: taken by this task" in logs.text
    assert any(_backup_folder(conn_id).iterdir())
