"""Faults under a real Airflow (``bin/airflow-local``, LocalExecutor), issue 22.

One Airflow for the module. Each test breaks something while a migration runs — two starts
into one target within a second, the scheduler killed mid-run, the task process of a large
``apply_table`` killed mid-COPY — and asserts the exact end state: the target's rows (count
and md5) equal the source's, the target lock is free, a new run can start.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
import pytest

from migration_manager.store_layout import safe_component
from migration_manager.target_lock import owner
from tests.e2e.airflowapi import Airflow, component, running_airflow, start_daemon, wait_for
from tests.pgtools import REPO, rows, sql

PIPELINES = """\
pipelines:
  - name: e2e_faults
    source_conn_id: e2e_faults_pipe_source
    target_conn_id: e2e_faults_target
    profile: generic
    schedule: "0 HOUR * * *"
    rules: {user: {default: overwrite}}
    options: {backup: false, rollback: false, on_missing_plugins: continue, on_destructive: continue}
"""
SYNC = "migration_sync"
PIPE = "sync_e2e_faults"
WRITERS = ("backup", "env_write", "apply_table")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    tmp = tmp_path_factory.mktemp("e2e-faults")
    pipelines = tmp / "pipelines.yaml"
    # Airflow's cron timetable (no start date, catchup off) runs the past fire time at once when
    # the DAG is unpaused within a tenth of the period after it (2.4 h for a daily cron): a fire
    # time 12 h away on either side never runs during the test, whatever the hour it starts
    pipelines.write_text(PIPELINES.replace("HOUR", str((datetime.now(UTC).hour + 12) % 24)))
    env = {
        "MIGRATION_PIPELINES": str(pipelines),
        "MM_LOCK_TIMEOUT": "180s",
        # a task whose process vanished without a word is failed (and retried) after 30 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        # tasks queued to a killed scheduler's executor are reset by the next scheduler after
        # this (Airflow's default 300 s: most of a restart's delay)
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "20",
    }
    with running_airflow(tmp, env=env) as instance:
        yield instance


def _tables(dsn: str, n: int, rows_each: int, tag: str) -> None:
    sql(
        dsn,
        "".join(
            f"CREATE TABLE t{i} (id int PRIMARY KEY, payload text NOT NULL);"
            f"INSERT INTO t{i} SELECT g, md5('{tag}' || g) || g FROM generate_series(1, {rows_each}) g;"
            for i in range(1, n + 1)
        ),
    )


def _content(dsn: str, n: int) -> list[Any]:
    return [
        rows(dsn, f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM t{i} AS t")[0]
        for i in range(1, n + 1)
    ]


def _lock_free(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return owner(conn) is None


def _sync_conf(source: str, target: str, **extra: Any) -> dict[str, Any]:
    return {
        "source_conn_id": source,
        "target_conn_id": target,
        "profile": "generic",
        "rules": {"user": {"default": "overwrite"}},
        "on_missing_plugins": "continue",
        "on_destructive": "continue",
        **extra,
    }


def _time(value: str | None) -> float:
    assert value, "a writer task without start or end date"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _writer_spans(airflow: Airflow, dag_id: str, run_id: str) -> list[tuple[float, float, str]]:
    """(start, end, task) of every writing task of the run that ran."""
    return [
        (_time(ti["start_date"]), _time(ti["end_date"]), f"{ti['task_id']}[{ti['map_index']}]")
        for ti in airflow.task_instances(dag_id, run_id)
        if ti["task_id"] in WRITERS and ti["state"] == "success"
    ]


def test_sync_now_and_a_pipeline_run_within_a_second_never_interleave(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    """The rules page's Sync now (source A) and a run of the pipeline's DAG (source B) into
    one target, started within a second: one holds the lock, the other waits for it; no
    writing task of one overlaps one of the other; the target ends as the later run left it."""
    source_a, source_b, target = new_db(), new_db(), new_db()
    _tables(source_a, 3, 100_000, "a")
    _tables(source_b, 3, 100_000, "b")
    airflow.set_connection("e2e_faults_now_source", source_a)
    airflow.set_connection("e2e_faults_pipe_source", source_b)
    airflow.set_connection("e2e_faults_target", target)
    airflow.unpause(SYNC)
    airflow.wait_for_dag(PIPE)

    # With that schedule no run starts when the DAG is unpaused, and a schedule that
    # fires every minute would keep starting runs during the test: the pipeline DAG's run is
    # triggered through the REST API the moment Sync now has queued its run (the same DAG and
    # tasks as its scheduled runs; the run type never reaches the lock)
    airflow.set_paused(PIPE, False)
    started: dict[str, Any] = {}
    started[SYNC] = airflow.client.post(  # the rules page's "Sync now", as its script posts it
        "/migrations/rules/api/start",
        json={
            "action": "sync",
            "source_conn_id": "e2e_faults_now_source",
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "target_conn_id": "e2e_faults_target",
            "on_missing_plugins": "continue",
        },
    )
    started[PIPE] = airflow.trigger(PIPE, {})
    assert started[SYNC].status_code == 200, started[SYNC].text
    runs = {PIPE: started[PIPE], SYNC: started[SYNC].json()["run_id"]}
    queued = [_time(airflow.run(dag, run)["queued_at"]) for dag, run in runs.items()]
    assert abs(queued[0] - queued[1]) < 1, queued  # within a second
    ended = {dag: airflow.wait_for_run(dag, run, timeout=600) for dag, run in runs.items()}
    explained = {dag: airflow.explain(dag, run) for dag, run in runs.items()}
    spans = {dag: _writer_spans(airflow, dag, run) for dag, run in runs.items()}
    holds = {dag: airflow.log(dag, run, "hold_target_lock", 1) for dag, run in runs.items()}
    # the one that took the lock first ran; the other waited for it (its log names that run)
    first = next(d for d in runs if "locked by migration run" not in holds[d])
    second = next(d for d in runs if d != first)
    assert ended[first] == "success", explained[first]
    assert f"locked by migration run {first}/{runs[first]}" in holds[second], holds[second][-2000:]
    if ended[second] == "success":
        # its plan still held after the first run's writes: its writers ran after them
        assert max(e for _, e, _ in spans[first]) <= min(s for s, _, _ in spans[second]), spans
        last_source = source_b if second == PIPE else source_a
    else:
        # it planned while the first run was writing: its units were refused by the drift
        # guard, nothing of it written ("Run the migration again")
        assert not spans[second] or all(t.startswith("backup") for _, _, t in spans[second]), spans
        run_log = "".join(
            p.read_text()
            for p in (airflow.home.parent / "store").glob(
                f"logs/*/{safe_component(runs[second])}/migration.log"
            )
        )
        assert run_log.count("changed in the target since the plan") >= 3, run_log
        last_source = source_b if first == PIPE else source_a
    assert _content(target, 3) == _content(last_source, 3)
    assert _lock_free(target)


def _running_unit(airflow: Airflow, run_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            "an apply_table unit to run",
            lambda: next(
                (
                    ti
                    for ti in airflow.task_instances(SYNC, run_id)
                    if ti["task_id"] == "apply_table" and ti["state"] == "running"
                ),
                None,
            ),
            300,
            interval=0.3,
        )
    )


def _copying_backend(target: str) -> tuple[int, int]:
    """(backend pid, client port) of a session COPYing rows into the target (20 000 at least)."""
    db = psycopg.conninfo.conninfo_to_dict(target)["dbname"]

    def copying() -> tuple[int, int] | None:
        with psycopg.connect(target, autocommit=True) as conn:
            row = conn.execute(
                "SELECT p.pid, a.client_port FROM pg_stat_progress_copy p "
                "JOIN pg_stat_activity a ON a.pid = p.pid "
                "WHERE p.datname = %s AND p.command = 'COPY FROM' AND p.tuples_processed > 20000",
                (db,),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    return tuple(wait_for("a unit's COPY into the target", copying, 300, interval=0.05))  # type: ignore[return-value]


def _process_with_port(port: int) -> psutil.Process:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise AssertionError(f"no local process owns the connection from port {port}")


def _restart_scheduler(airflow: Airflow) -> tuple[int, int]:
    """SIGKILL ``bin/airflow-local``'s scheduler, then start it again as it was started (same
    command, environment and log, daemonised with the same pid file, so ``bin/airflow-local
    stop`` stops the new one). Returns (old pid, new pid)."""
    old = component(airflow.home, "scheduler")
    env = old.environ()
    workers = old.children(recursive=True)  # its executor's workers and their task processes
    assert workers, "the scheduler runs no executor worker"
    old.send_signal(signal.SIGKILL)

    def gone(p: psutil.Process) -> bool:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE

    wait_for("the scheduler to die", lambda: gone(old), 30, interval=0.1)
    # they die with it: an orphaned worker kept the scheduler's metadata-database transaction
    # (and its row locks) open, and the new scheduler never scheduled the run's next tasks
    wait_for("its workers to die with it", lambda: all(gone(w) for w in workers), 30, interval=0.1)
    time.sleep(3)  # the run goes on without a scheduler for a moment
    cmd = [str(REPO / ".venv" / "bin" / "airflow"), "scheduler", "--skip-serve-logs"]
    new = start_daemon(airflow.home, "scheduler", cmd, env)
    return old.pid, new.pid


def test_the_scheduler_killed_mid_run_and_started_again(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    """``kill -9`` of the scheduler while units run, then a new scheduler: the run finishes
    green, every table exact (no unit half applied), the lock free, a new run starts and ends."""
    source, target = new_db(), new_db()
    _tables(source, 3, 300_000, "s")
    airflow.set_connection("e2e_faults_sched_source", source)
    airflow.set_connection("e2e_faults_sched_target", target)
    airflow.unpause(SYNC)
    conf = _sync_conf("e2e_faults_sched_source", "e2e_faults_sched_target", skip_backup=True)
    run_id = airflow.trigger(SYNC, conf)
    _running_unit(airflow, run_id)
    _copying_backend(target)
    _restart_scheduler(airflow)
    assert airflow.wait_for_run(SYNC, run_id, timeout=600) == "success", airflow.explain(
        SYNC, run_id
    )
    assert _content(target, 3) == _content(source, 3)
    assert _lock_free(target)
    again = airflow.trigger(SYNC, conf)  # a new run starts, finds nothing to do, ends green
    assert airflow.wait_for_run(SYNC, again) == "success", airflow.explain(SYNC, again)
    assert _content(target, 3) == _content(source, 3)
    assert _lock_free(target)


def test_the_task_process_of_a_large_unit_killed_mid_copy_is_retried_exactly(
    airflow: Airflow, new_db: Callable[[], str]
) -> None:
    """``kill -9`` of the process running a ~1 M row ``apply_table`` while it COPYs: Airflow
    fails that try and retries it; the unit is applied once in effect (exact rows), the lock is
    released, the run ends green."""
    source, target = new_db(), new_db()
    _tables(source, 1, 1_000_000, "big")
    sql(target, "CREATE TABLE t1 (id int PRIMARY KEY, payload text NOT NULL)")
    sql(target, "INSERT INTO t1 SELECT g, 'old' FROM generate_series(1, 1000) g")
    airflow.set_connection("e2e_faults_kill_source", source)
    airflow.set_connection("e2e_faults_kill_target", target)
    airflow.unpause(SYNC)
    conf = _sync_conf("e2e_faults_kill_source", "e2e_faults_kill_target", skip_backup=True)
    run_id = airflow.trigger(SYNC, conf)
    unit = _running_unit(airflow, run_id)
    _pid, port = _copying_backend(target)
    task = _process_with_port(port)
    assert "airflow" in " ".join(task.cmdline()) or task.ppid() != 1, task
    task.send_signal(signal.SIGKILL)
    assert airflow.wait_for_run(SYNC, run_id, timeout=600) == "success", airflow.explain(
        SYNC, run_id
    )
    after = airflow.task_instance(SYNC, run_id, "apply_table", unit["map_index"])
    assert after["try_number"] == unit["try_number"] + 1, after  # the killed try, then its retry
    assert _content(target, 1) == _content(source, 1)
    assert _lock_free(target)
