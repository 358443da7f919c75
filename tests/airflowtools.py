"""Helpers for tests that run Airflow DAGs in-process with ``dag.test()``."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from tests.pgtools import REPO


@cache
def metadata_db() -> None:
    """Create the (SQLite, per test session) metadata database once."""
    from airflow.utils.db import resetdb

    resetdb()


@cache
def dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def get_dag(dag_id: str) -> Any:
    bag = dagbag()
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def connection_uri(dsn: str, app_env: dict[str, str] | None = None) -> str:
    """An ``AIRFLOW_CONN_*`` value: JSON form, so the extra can hold ``app_env``."""
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    doc: dict[str, Any] = {
        "conn_type": "postgres",
        "host": parts.hostname,
        "port": parts.port or 5432,
        "login": parts.username,
        "password": parts.password,
        "schema": parts.path.lstrip("/"),
    }
    if app_env:
        doc["extra"] = {"app_env": app_env}
    return json.dumps(doc)


def set_connections(monkeypatch: Any, **conns: str) -> None:
    """set_connections(monkeypatch, migration_source=dsn, ...)."""
    for conn_id, dsn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_uri(dsn))


def run_dag(dag_id: str, conf: dict[str, Any] | None = None) -> Any:
    """Run a DAG with ``dag.test()``; returns the DagRun."""
    metadata_db()
    return get_dag(dag_id).test(run_conf=conf or {})


def task_states(dag_run: Any) -> dict[str, list[str]]:
    from airflow.utils.session import create_session

    states: dict[str, list[str]] = {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def summaries(migration_id: str | None = None) -> list[dict[str, Any]]:
    """The summaries written by ``collect`` into the migration store, newest last."""
    root = Path(os.environ["MIGRATION_STORE"].removeprefix("file://")) / "logs"
    found = sorted(
        root.glob(f"{migration_id or '*'}/*/summary.json"), key=lambda p: p.stat().st_mtime
    )
    return [json.loads(p.read_text()) for p in found]


def xcom(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = (
            session.query(XComModel.value)
            .filter_by(
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                task_id=task_id,
                map_index=map_index,
                key="return_value",
            )
            .scalar()
        )
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
