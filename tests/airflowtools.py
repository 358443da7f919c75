"""Helpers for tests that run Airflow DAGs in-process with ``dag.test()``."""

from __future__ import annotations

import contextlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.pgtools import REPO


def airflow_env() -> dict[str, str]:
    """The project's Airflow settings (``airflow.env``), as bin/airflow-local reads them."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(REPO / "airflow.env").items() if v is not None}


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
    from tests.factories import connection_document

    return json.dumps(connection_document(dsn, extra={"app_env": app_env} if app_env else None))


def set_connections(monkeypatch: Any, **conns: str) -> None:
    """set_connections(monkeypatch, migration_source=dsn, ...)."""
    for conn_id, dsn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_uri(dsn))


def run_dag(dag_id: str, conf: dict[str, Any] | None = None) -> Any:
    """Run a DAG with ``dag.test()``; returns the DagRun."""
    metadata_db()
    # a fresh DAG object per run: dag.test() keeps a run's conf in the DAG's params
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    conf = dict(conf or {})
    if "on_destructive" in dag.params:
        # A manual run waits for approval of a destructive plan (every NocoBase overwrite of the
        # fixture pair is one); tests about other things go on, tests about it set it themselves.
        conf.setdefault("on_destructive", "continue")
    return dag.test(run_conf=conf)


def task_states(dag_run: Any) -> dict[str, list[str]]:
    from airflow.utils.session import create_session

    states: dict[str, list[str]] = {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def summaries(migration_id: str | None = None) -> list[dict[str, Any]]:
    """The summaries written by ``collect_logs`` into the migration store, newest last."""
    root = Path(os.environ["MIGRATION_STORE"].removeprefix("file://")) / "logs"
    found = sorted(
        root.glob(f"{migration_id or '*'}/*/summary.json"), key=lambda p: p.stat().st_mtime
    )
    return [json.loads(p.read_text()) for p in found]


def xcom(dag_run: Any, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
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
                key=key,
            )
            .scalar()
        )
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


class _User:
    def __init__(self, name: str):
        self.name = name

    def get_id(self) -> str:
        return self.name

    def get_name(self) -> str:
        return self.name


def answer_when_asked(
    dag_id: str,
    task_id: str,
    chosen: list[str],
    params_input: dict[str, Any] | None = None,
    *,
    user: str = "tester",
    before_answer: Any = None,
) -> Any:
    """Start a thread that answers a human-in-the-loop task once it waits for input.

    ``before_answer``: called (no arguments) once the task waits, just before the answer.

    It calls the handler behind ``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails``
    (the REST API's own code path) against the test's metadata database. ``thread.answered``
    holds the answer's time once given; ``thread.error`` any exception.
    """
    import threading
    import time

    def run() -> None:
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                with create_session() as session:
                    ti = (
                        session.query(TaskInstance)
                        .filter_by(
                            dag_id=dag_id, task_id=task_id, state=TaskInstanceState.AWAITING_INPUT
                        )
                        .first()
                    )
                    if ti is not None:
                        if before_answer is not None:
                            before_answer()
                        update_hitl_detail(
                            dag_id=dag_id,
                            dag_run_id=ti.run_id,
                            task_id=task_id,
                            update_hitl_detail_payload=UpdateHITLDetailPayload(
                                chosen_options=chosen, params_input=params_input or {}
                            ),
                            user=_User(user),
                            session=session,
                            map_index=ti.map_index,
                        )
                        thread.answered = time.time()  # type: ignore[attr-defined]
                        return
                time.sleep(0.5)
        except Exception as exc:  # reported to the test
            thread.error = exc  # type: ignore[attr-defined]
            _fail_waiting(dag_id, task_id)

    def _fail_waiting(dag_id: str, task_id: str) -> None:
        """Without an answer dag.test() would wait for one forever: fail the waiting task."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        try:
            with create_session() as session:
                for ti in session.query(TaskInstance).filter_by(
                    dag_id=dag_id, task_id=task_id, state=TaskInstanceState.AWAITING_INPUT
                ):
                    ti.state = TaskInstanceState.FAILED
        except Exception:  # the test reports thread.error; this only unblocks dag.test()
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.answered = None  # type: ignore[attr-defined]
    thread.error = None  # type: ignore[attr-defined]
    thread.start()
    return thread


def rerun_cleared(dag_run: Any, *tasks: tuple[str, int]) -> Any:
    """Clear task instances ``(task_id, map_index)`` of a finished run, as the UI's Clear does,
    and run what the scheduler then runs, in process as ``dag.test()`` does. Returns the DagRun."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_run.dag_id}.py"))
    dag = bag.dags[dag_run.dag_id]
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with create_session() as session:
        dr = session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()
        dr.dag = scheduler_dag
        tis = [dr.get_task_instance(t, map_index=i, session=session) for t, i in tasks]
        assert all(ti is not None for ti in tis), tasks
        clear_task_instances(tis, session, dag_run_state=DagRunState.RUNNING)
        session.commit()
        for _ in range(20):
            session.expire_all()
            if dr.state != DagRunState.RUNNING:
                break
            schedulable, _callback = dr.update_state(session=session)
            for s in schedulable:
                s.try_number += 1
                s.state = TaskInstanceState.SCHEDULED
            session.commit()
            scheduled = [
                x
                for x in dr.get_task_instances(session=session)
                if x.state == TaskInstanceState.SCHEDULED
            ]
            for x in scheduled:
                # the task's failure is its state, as in dag.test()
                with contextlib.suppress(Exception):
                    _run_task(ti=x, task=dag.task_dict[x.task_id])
        session.expire_all()
        return session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()


def pipeline_dag(tmp_path: Path, monkeypatch: Any, **pipeline: Any) -> Any:
    """The sync_<name> DAG of a one-pipeline file."""
    from migration_manager.airflow.pipeline_dags import pipeline_dags

    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump({"pipelines": [pipeline]}))
    monkeypatch.setenv("MIGRATION_PIPELINES", str(path))
    (dag,) = pipeline_dags(str(path)).values()
    return dag
