"""Team scale, for real: CeleryExecutor with a Celery worker on this machine's Redis, and the
migration store on an S3-compatible server (moto's server mode on loopback) through
``ObjectStoragePath``; a migration runs end to end through the REST API.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import psutil
import psycopg
import pytest

from migration_manager.target_lock import owner
from tests.e2e.airflowapi import (
    Airflow,
    component,
    free_port,
    running_airflow,
    start_daemon,
    wait_for,
)
from tests.pgtools import REPO, sql, table_text

REDIS = "redis://127.0.0.1:6379/11"
BUCKET = "mm-e2e-store"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    """An S3-compatible server on loopback (moto's server mode) with an empty bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, s3: tuple[str, Any]) -> Iterator[Airflow]:
    endpoint, _client = s3
    tmp = tmp_path_factory.mktemp("e2e-celery")
    env = {
        # the connection the store URI names (s3://<conn id>@<bucket>/<prefix>)
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
        "MIGRATION_STORE": f"s3://aws_default@{BUCKET}/migrations",
        # a queue of our own, so no other worker on this Redis takes our tasks
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"mm-e2e-{uuid.uuid4().hex[:8]}",
        "MM_AIRFLOW_BROKER": REDIS,
        # a task whose worker vanished is failed (and retried) after 30 s without heartbeats
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    }
    with running_airflow(tmp, executor="CeleryExecutor", env=env) as instance:
        yield instance


def test_migration_through_celery_with_the_store_on_s3(
    airflow: Airflow, s3: tuple[str, Any], new_db: Callable[[], str]
) -> None:
    _endpoint, client = s3
    source, target = new_db(), new_db()
    sql(
        source,
        """
        CREATE TABLE settings (id int PRIMARY KEY, value jsonb);
        CREATE TABLE pages (id serial PRIMARY KEY, title text NOT NULL);
        INSERT INTO settings SELECT g, jsonb_build_object('k', g) FROM generate_series(1, 20) g;
        INSERT INTO pages (title) SELECT 'page ' || g FROM generate_series(1, 30) g;
        """,
    )
    sql(
        target,
        "CREATE TABLE pages (id serial PRIMARY KEY, title text); INSERT INTO pages VALUES (99, 'old')",
    )
    airflow.set_connection("e2e_celery_source", source)
    airflow.set_connection("e2e_celery_target", target)
    airflow.unpause("migration_sync")
    run_id = airflow.trigger(
        "migration_sync",
        {
            "source_conn_id": "e2e_celery_source",
            "target_conn_id": "e2e_celery_target",
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "on_missing_plugins": "continue",
            "on_destructive": "continue",
        },
    )
    assert airflow.wait_for_run("migration_sync", run_id) == "success", airflow.explain(
        "migration_sync", run_id
    )
    for table in ("settings", "pages"):
        assert table_text(target, table) == table_text(source, table), table

    # every task went through the Celery worker (our queue), none through another executor
    queue = None
    for ti in airflow.task_instances("migration_sync", run_id):
        if ti["state"] == "success":
            queue = queue or ti["queue"]
            assert ti["queue"] == queue and queue.startswith("mm-e2e-"), ti
    worker_log = (airflow.home / "logs" / "celery-worker.log").read_text(errors="replace")
    assert "execute_workload" in worker_log and "succeeded" in worker_log

    # the migration file, the backup and the run summary live in the bucket
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith("migrations/files/") and k.endswith(".zip") for k in keys), keys
    assert any(k.startswith("migrations/backups/e2e_celery_target/") for k in keys), keys
    run_logs = [k for k in keys if k.startswith("migrations/logs/") and run_id in k]
    assert run_logs, keys  # the run's summary / log, written by the last task
    create = airflow.call(
        "GET",
        f"/dags/migration_sync/dagRuns/{run_id}/taskInstances/create_migration_file/xcomEntries/return_value",
    )["value"]
    assert str(create).startswith(f"s3://aws_default@{BUCKET}/migrations/files/")


def _second_worker(airflow: Airflow) -> psutil.Process:
    """Start another Celery worker like bin/airflow-local's (its command, environment and
    folder, another Celery hostname); recorded in the instance's state so that
    ``bin/airflow-local stop`` stops it too."""
    scheduler = component(airflow.home, "scheduler")
    # bin/airflow-local's worker command (Celery rewrites the process title, so not its cmdline)
    airflow_bin = str(REPO / ".venv" / "bin" / "airflow")
    hostname = f"second-{uuid.uuid4().hex[:6]}@%h"
    cmd = [airflow_bin, "celery", "worker", "--skip-serve-logs", "--celery-hostname", hostname]
    # the scheduler's environment: Celery's process title overwrites the worker's own
    second = start_daemon(airflow.home, "celery-worker-2", cmd, scheduler.environ())
    return second


def _copying_client(target: str) -> psutil.Process:
    """The local process whose session COPYs rows into the target (20 000 at least)."""
    db = psycopg.conninfo.conninfo_to_dict(target)["dbname"]

    def port() -> int | None:
        with psycopg.connect(target, autocommit=True) as conn:
            row = conn.execute(
                "SELECT a.client_port FROM pg_stat_progress_copy p "
                "JOIN pg_stat_activity a ON a.pid = p.pid "
                "WHERE p.datname = %s AND p.command = 'COPY FROM' AND p.tuples_processed > 20000",
                (db,),
            ).fetchone()
        return int(row[0]) if row else None

    client_port = wait_for("a unit's COPY into the target", port, 300, interval=0.05)
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == client_port and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError(f"no local process owns the connection from port {client_port}")


def test_a_worker_killed_mid_unit_the_unit_is_retried_on_another_worker(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    """SIGKILL of the whole Celery worker running a ~1 M row apply_table mid-COPY: Airflow
    notices the missing heartbeats, retries the unit on the other worker; the unit is applied
    once in effect (exact rows), the target lock is released, the run ends green."""
    source, target = new_db(), new_db()
    sql(
        source,
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);"
        "INSERT INTO big SELECT g, md5(g::text) || g FROM generate_series(1, 1000000) g",
    )
    sql(target, "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)")
    second = _second_worker(airflow)
    airflow.set_connection("e2e_kill_source", source)
    airflow.set_connection("e2e_kill_target", target)
    airflow.unpause("migration_sync")
    run_id = airflow.trigger(
        "migration_sync",
        {
            "source_conn_id": "e2e_kill_source",
            "target_conn_id": "e2e_kill_target",
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "skip_backup": True,
            "on_missing_plugins": "continue",
            "on_destructive": "continue",
        },
    )
    task = _copying_client(target)
    workers = {component(airflow.home, k).pid for k in ("celery-worker", "celery-worker-2")}
    worker = next(p for p in task.parents() if p.pid in workers)
    survivor_log = (
        airflow.home
        / "logs"
        / ("celery-worker-2.log" if worker.pid != second.pid else "celery-worker.log")
    )
    seen = survivor_log.stat().st_size
    victims = [worker, *worker.children(recursive=True)]
    for proc in victims:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    assert airflow.wait_for_run("migration_sync", run_id, timeout=600) == "success", (
        airflow.explain("migration_sync", run_id)
    )
    unit = airflow.task_instance("migration_sync", run_id, "apply_table", 0)
    assert unit["try_number"] >= 2, unit  # the killed try, then its retry
    with survivor_log.open("rb") as fh:  # after the kill, only the other worker ran tasks
        fh.seek(seen)
        assert b"execute_workload" in fh.read()
    assert table_text(target, "big") == table_text(source, "big")
    with psycopg.connect(target, autocommit=True) as conn:
        assert owner(conn) is None
