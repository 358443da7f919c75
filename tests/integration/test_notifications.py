"""Notifications through Airflow's notifier mechanism, received by a real SMTP server on loopback.

The receiver is aiosmtpd started by the test on 127.0.0.1; the runs are ``dag.test()`` runs with
an Airflow ``smtp`` connection pointing at it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.airflowtools import (
    answer_when_asked,
    connection_uri,
    metadata_db,
    pipeline_dag,
    run_dag,
    task_states,
)
from tests.mailtools import Inbox, message_body
from tests.pgtools import FIXTURES, sql

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

PROD_KEY = (FIXTURES / "dev_prod_aes_key.dat").read_bytes()


SOURCE = """
CREATE TABLE good (id int PRIMARY KEY, v text);
INSERT INTO good SELECT g, 'source ' || g FROM generate_series(1, 50) g;
CREATE TABLE bad (id int PRIMARY KEY, v integer);
INSERT INTO bad VALUES (1, 1);
"""
# the target's `bad` holds text the source's integer type cannot take: its unit fails
TARGET = """
CREATE TABLE good (id int PRIMARY KEY, v text);
INSERT INTO good SELECT g, 'target ' || g FROM generate_series(1, 50) g;
CREATE TABLE bad (id int PRIMARY KEY, v text);
INSERT INTO bad VALUES (1, 'one');
"""


def test_a_failed_nightly_run_sends_one_notification(
    source: str,
    target: str,
    inbox: Inbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sql(source, SOURCE)
    sql(target, TARGET)
    name = f"nightly_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_SOURCE", connection_uri(source))
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_PROD", connection_uri(target))
    # an older run of this target in the store: beyond logs_to_keep / files_to_keep after this run
    store = Path(os.environ["MIGRATION_STORE"].removeprefix("file://"))
    old_mid = f"mig-20200101T000000Z-{name[-6:]}"
    old_log = store / "logs" / old_mid / "scheduled__2020-01-01T02_00_00_00_00"
    old_log.mkdir(parents=True)
    (old_log / "migration.json").write_text(
        json.dumps(
            {
                "started_at": "2020-01-01T02:00:00+00:00",
                "target": {"conn_id": f"{name}_prod"},
                "migration_file": {"name": f"{old_mid}.zip"},
            }
        )
    )
    (store / "files").mkdir(parents=True, exist_ok=True)
    (store / "files" / f"{old_mid}.zip").write_bytes(b"an old migration file")
    dag = pipeline_dag(
        tmp_path,
        monkeypatch,
        name=name,
        source_conn_id="notify_source",
        target_conn_id=f"{name}_prod",
        profile="generic",
        schedule="0 2 * * *",
        rules={"user": {"default": "overwrite"}},
        options={
            "notify_conn_id": "mm_smtp",
            "notify_to": ["ops@example.test", "dba@example.test"],
            "logs_to_keep": 1,
            "files_to_keep": 1,
        },
    )
    metadata_db()
    dag_run = dag.test()

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["apply_table"].count("failed") == 1 and states["rollback"] == ["success"]
    (msg,) = inbox.wait(1)
    time.sleep(1)  # nothing else arrives
    assert len(inbox.messages) == 1, [m["Subject"] for m in inbox.messages]
    assert sorted(inbox.recipients[0]) == ["dba@example.test", "ops@example.test"]
    assert msg["From"] == "migrations@airflow.test"
    assert msg["X-Migration-Event"] == "rollback"
    subject = str(msg["Subject"])
    assert subject.startswith(f"Migration sync_{name} into {name}_prod failed and was rolled back")
    body = message_body(msg)
    assert f"sync_{name}" in body and dag_run.run_id in body and f"{name}_prod" in body
    assert "apply_table[bad (overwrite)]" in body  # the failed table, with its error
    assert "rolled back to backup bk-" in body
    from migration_manager import store_layout

    run_folder = store_layout.safe_component(dag_run.run_id)
    assert "/migrations/runs/mig-" in body and f"/{run_folder}'" in body
    assert f"/dags/sync_{name}/runs/" in body
    # retention after the run: the older log and file of this target are gone, this run's stay
    assert not old_log.exists() and not (store / "files" / f"{old_mid}.zip").exists()
    assert len(list(store.glob(f"logs/mig-*/{run_folder}/migration.json"))) == 1
    assert (store / "in_use").is_dir()  # the run leased its file while it ran ...
    assert list((store / "in_use").glob(f"sync_{name}__*.json")) == []  # ... and released it


def test_a_question_is_notified_and_success_is_not_unless_asked(
    nocobase_pair: tuple[str, str], inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
    monkeypatch.setenv(
        "AIRFLOW_CONN_MIGRATION_TARGET",
        connection_uri(prod, {"APP_AES_SECRET_KEY": PROD_KEY.hex()}),
    )
    answer = answer_when_asked("migration_sync", "plugin_check", ["Continue anyway"], user="olga")
    dag_run = run_dag(
        "migration_sync",
        {
            "env_values": {"HELPDESK_URL": "https://h.invalid", "HELPDESK_KEY": "k-notify-1"},
            "on_missing_plugins": "ask",
            "notify_conn_id": "mm_smtp",
            "notify_to": ["ops@example.test"],
            "notify_events": ["question"],
        },
    )
    assert answer.error is None and answer.answered
    assert str(dag_run.state) == "success", task_states(dag_run)
    (msg,) = inbox.wait(1)
    time.sleep(1)
    assert len(inbox.messages) == 1  # the question; not the success (not in notify_events)
    assert msg["X-Migration-Event"] == "question"
    assert "waits for an answer" in str(msg["Subject"])
    body = message_body(msg)
    assert "Plugins missing in the target" in body and "graph-collection-manager" in body
    assert "Required actions" in body and dag_run.run_id in body
    assert "k-notify-1" not in body


def test_a_run_stopped_by_a_check_sends_a_failure(
    nocobase_pair: tuple[str, str], inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
    # prod's app is configured otherwise: env_check stops the run before the plan
    monkeypatch.setenv(
        "AIRFLOW_CONN_MIGRATION_TARGET", connection_uri(prod, {"DB_TABLE_PREFIX": "nb_"})
    )
    dag_run = run_dag(
        "migration_sync",
        {
            "notify_conn_id": "mm_smtp",
            "notify_to": ["ops@example.test"],
            "notify_events": ["failure"],
        },
    )
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["env_check"] == ["failed"]
    (msg,) = inbox.wait(1)
    time.sleep(1)
    assert len(inbox.messages) == 1
    assert msg["X-Migration-Event"] == "failure"
    assert "failed: the run stopped at env_check" in str(msg["Subject"])
    body = message_body(msg)
    assert "env_check: The source and target applications are configured differently" in body
    assert "DB_TABLE_PREFIX: source &#x27;&#x27;, target &#x27;nb_&#x27;" in body  # html-escaped
    assert "/migrations/runs/mig-" in body  # its log was written: the run page
