"""Helpers of the integration tests that run the DAGs (``dag.test()``), shared by several files.

- connections: ``target_conn_id`` (a fresh target connection id), ``connect_nocobase_pair``
  (the NocoBase fixture pair as migration_source / migration_target);
- what a run left: ``Logs`` (its task logs; the ``logs`` fixture is in conftest.py),
  ``log_folder`` and ``run_record`` (its log in the store), ``xcom_key`` (an XCom by key);
- scenarios several files run: a sync whose unit ``bad`` fails (``FAILING_SOURCE``,
  ``FAILING_TARGET``, ``failing_sync``), the NocoBase pair's destructive uiSchemas overwrite
  (``UI_OVERWRITE_ANSWERS``, ``UI_OVERWRITE_PART``) and its helpdesk environment values.

The generic helpers (``run_dag``, ``task_states``, ``xcom`` ...) are in tests/airflowtools.py.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import connection_uri, run_dag
from tests.pgtools import FIXTURES

PROD_KEY = (FIXTURES / "dev_prod_aes_key.dat").read_bytes()
"""The NocoBase fixture's prod APP_AES_SECRET_KEY."""

HELPDESK_SECRET = "s3cr3t-prod-helpdesk-7f9c1e"
HELPDESK_URL = "https://helpdesk.prod.invalid/api"


# --- connections --------------------------------------------------------------------------------


def target_conn_id(
    monkeypatch: pytest.MonkeyPatch, dsn: str, app_env: dict[str, str] | None = None
) -> str:
    """A new connection id (``mm_target_<hex>``) to ``dsn``: its backups get their own folder."""
    conn_id = f"mm_target_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_uri(dsn, app_env))
    return conn_id


def connect_nocobase_pair(
    monkeypatch: pytest.MonkeyPatch, staging: str, prod: str, prod_env: dict[str, str] | None = None
) -> None:
    """migration_source is ``staging``; migration_target is ``prod`` with prod's AES key
    (and ``prod_env``)."""
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
    env = {"APP_AES_SECRET_KEY": PROD_KEY.hex(), **(prod_env or {})}
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_TARGET", connection_uri(prod, env))


# --- what a run left ----------------------------------------------------------------------------


class Logs:
    """Task logs of ``dag.test()`` runs, read from what pytest captured.

    ``dag.test()`` prints task logs (the first run of a session) or hands them to ``logging``
    (later runs, once pytest's log handler is in place): both are collected.
    """

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
        self.capfd = capfd
        self.caplog = caplog
        self.text = ""

    def run(self, dag_id: str, conf: dict[str, Any]) -> Any:
        self.capfd.readouterr()
        self.caplog.clear()
        with self.caplog.at_level(logging.INFO):
            dag_run = run_dag(dag_id, conf)
        captured = self.capfd.readouterr()
        self.text = "\n".join((captured.out, captured.err, self.caplog.text))
        return dag_run

    def task(self, name: str) -> str:
        """What the task logged in the last run: lines tagged with its operator (or task) name."""
        lines = [line for line in self.text.splitlines() if name in line]
        assert lines, f"nothing logged by {name}"
        return "\n".join(lines)


def log_folder(dag_run: Any) -> Path:
    """The run's log folder in the store (``logs/<migration id>/<run id>``); exactly one."""
    from migration_manager.store_layout import safe_component
    from tests.uitools import store_root

    found = list((store_root() / "logs").glob(f"*/{safe_component(dag_run.run_id)}"))
    assert len(found) == 1, f"no single log folder for run {dag_run.run_id}: {found}"
    return found[0]


def run_record(folder: Path) -> dict[str, Any]:
    """The run record (migration.json) in a log folder."""
    return dict(json.loads((folder / "migration.json").read_text()))


def xcom_key(dag_run: Any, task_id: str, key: str) -> Any:
    """The XCom ``key`` that ``task_id`` pushed in ``dag_run`` (``xcom`` reads return values)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = (
            session.query(XComModel.value)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
            .scalar()
        )
    return json.loads(value) if isinstance(value, (str, bytes)) else value


# --- a sync whose unit `bad` fails --------------------------------------------------------------

FAILING_SOURCE = """
CREATE TABLE good (id int PRIMARY KEY, v text);
INSERT INTO good SELECT g, 'source ' || g FROM generate_series(1, 50) g;
CREATE TABLE fresh (id int PRIMARY KEY, v text);
INSERT INTO fresh VALUES (1, 'new in the source');
CREATE TABLE bad (id int PRIMARY KEY, v integer);
INSERT INTO bad VALUES (1, 1);
"""
# the target's `bad` holds text that the source's integer type cannot take: its unit fails
FAILING_TARGET = """
CREATE TABLE good (id int PRIMARY KEY, v text);
INSERT INTO good SELECT g, 'target ' || g FROM generate_series(1, 80) g;
CREATE TABLE bad (id int PRIMARY KEY, v text);
INSERT INTO bad VALUES (7, 'seven');
CREATE TABLE untouched (id serial PRIMARY KEY, note text);
INSERT INTO untouched (note) VALUES ('kept'), ('as is');
"""
OVERWRITE_ALL = {"profile": "generic", "rules": {"user": {"default": "overwrite"}}}


def failing_sync(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs, **conf: Any
) -> tuple[Any, str]:
    """FAILING_SOURCE and FAILING_TARGET must be loaded; runs a sync whose `bad` unit fails.
    Returns the run and its target connection id."""
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source))
    conn_id = target_conn_id(monkeypatch, target)
    dag_run = logs.run("migration_sync", {**OVERWRITE_ALL, "target_conn_id": conn_id, **conf})
    assert str(dag_run.state) == "failed"
    return dag_run, conn_id


# --- the NocoBase pair: overwriting prod's uiSchemas is destructive -----------------------------

UI_OVERWRITE = {"system": {"default": "schema-only", "independent": {"uiSchemas": "overwrite"}}}
UI_OVERWRITE_ANSWERS: dict[str, Any] = {
    "env_values": {"HELPDESK_URL": "https://h.invalid", "HELPDESK_KEY": "k-destructive"},
    "on_missing_plugins": "continue",
    "rules": UI_OVERWRITE,
}
"""The conf of a migration_sync of the pair that overwrites uiSchemas and answers the rest."""
UI_OVERWRITE_PART = "uiSchemas: overwrite would delete 63 of its 66 rows (95%)"
"""What the destructive check says of that overwrite."""
