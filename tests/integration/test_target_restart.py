"""The target database goes away while a unit COPYs its rows (issue 22).

A throwaway cluster is the target (the shared server is never restarted): ``pg_ctl restart -m
fast`` and ``pg_terminate_backend`` of the unit's session land while its COPY runs (seen in
``pg_stat_progress_copy``). The unit fails as transient (Airflow retries it) and its
transaction is gone: the target keeps its old content; the retry applies the file exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_manager.errors import TransientError
from tests.pgcluster import Cluster, throwaway_cluster
from tests.pgtools import apply_file, make_file, rows, sql

pytestmark = pytest.mark.postgres

ROWS = 400_000
OVERWRITE = {"user": {"default": "overwrite"}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def migration(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A source of ``ROWS`` rows and its migration file (overwrite)."""
    from tests.pgtools import create_database, drop_database, dsn_for

    name = create_database()
    source = dsn_for(name)
    sql(
        source,
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);"
        f"INSERT INTO items SELECT g, md5(g::text) || g FROM generate_series(1, {ROWS}) g",
    )
    path = tmp_path_factory.mktemp("restart") / "m.zip"
    make_file(source, path, rules=OVERWRITE)
    try:
        yield source, path
    finally:
        drop_database(name)


def _content(dsn: str) -> list[Any]:
    return rows(
        dsn,
        "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM items AS t"
        if rows(dsn, "SELECT to_regclass('items')")[0][0]
        else "SELECT 'no table items'",
    )


def _apply_in_background(path: Path, target: str) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            apply_file(path, target)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="apply")
    thread.start()
    return thread, errors


def _copying(cluster: Cluster, db: str, at_least: int = 20_000) -> int:
    """Wait until a COPY into ``db`` has processed ``at_least`` rows; returns its backend pid."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid, tuples_processed FROM pg_stat_progress_copy "
                "WHERE datname = %s AND command = 'COPY FROM'",
                (db,),
            ).fetchone()
        if row and row[1] >= at_least:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the unit's COPY never started")


def _fails_as_transient(
    cluster: Cluster, path: Path, target: str, db: str, fault: Callable[[int], None]
) -> TransientError:
    thread, errors = _apply_in_background(path, target)
    pid = _copying(cluster, db)
    fault(pid)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the apply hung after the fault"
    assert len(errors) == 1, f"the apply did not fail: {errors}"
    error = errors[0]
    assert isinstance(error, TransientError), repr(error)
    assert "items" in str(error) and "rolled back" in str(error), str(error)
    return error


def _new_target(cluster: Cluster, setup: str = "") -> tuple[str, str]:
    db = f"target_{time.monotonic_ns()}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    target = cluster.dsn(db)
    if setup:
        sql(target, setup)
    return db, target


def test_target_restart_mid_copy_fails_transient_and_the_retry_is_exact(
    cluster: Cluster, migration: tuple[str, Path]
) -> None:
    """Restart mid-COPY into a table the unit creates: no table left; the retry creates it exactly."""
    source, path = migration
    db, target = _new_target(cluster)
    _fails_as_transient(cluster, path, target, db, lambda _pid: cluster.restart())
    cluster.wait_ready()
    assert _content(target) == [("no table items",)]  # the unit's CREATE TABLE went with it
    results = apply_file(path, target)  # the retry
    assert results["items"].inserted == ROWS
    assert _content(target) == _content(source)


def test_terminated_session_mid_copy_fails_transient_and_the_retry_is_exact(
    cluster: Cluster, migration: tuple[str, Path]
) -> None:
    """``pg_terminate_backend`` of the unit's session while it stages rows into a table with
    old rows: the old rows stay; the retry (the same code path) merges exactly."""
    source, path = migration
    db, target = _new_target(
        cluster,
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);"
        "INSERT INTO items SELECT g, 'old' FROM generate_series(1, 1000) g;"
        "INSERT INTO items VALUES (9999999, 'target only')",
    )
    before = _content(target)

    def terminate(pid: int) -> None:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)

    _fails_as_transient(cluster, path, target, db, terminate)
    assert _content(target) == before
    results = apply_file(path, target)
    assert (results["items"].inserted, results["items"].updated) == (ROWS - 1000, 1000)
    assert results["items"].deleted == 1
    assert _content(target) == _content(source)


def test_the_run_lock_is_taken_back_after_a_restart_and_released_at_the_end(
    cluster: Cluster,
) -> None:
    """The run's lock holder loses its session with the restart: it takes the lock back (a
    writer retried meanwhile shares it as before), and lets it go once the writers are done."""
    from migration_manager.target_lock import DagRunRef, hold_until, owner, write_lock

    db, target = _new_target(cluster)
    ref = DagRunRef("migration_sync", "restart-1")
    finished = threading.Event()
    lost: list[str] = []
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            hold_until(
                target,
                ref,
                done=finished.is_set,
                timeout=30,
                interval=0.1,
                poll=0.1,
                on_lost=lambda exc: lost.append(str(exc)),
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    def holder() -> Any:
        with psycopg.connect(target, autocommit=True) as conn:
            return owner(conn)

    thread = threading.Thread(target=hold, name="holder")
    thread.start()
    try:
        first = _wait_for(lambda: (who := holder()) is not None and who.is_holder_of(ref) and who)
        cluster.restart()
        again = _wait_for(lambda: (who := holder()) is not None and who.is_holder_of(ref) and who)
        assert again.pid != first.pid and lost, (first, again, lost)
        with write_lock(target, ref, timeout=5) as how:  # the unit's retry
            assert "held for this run by its lock holder" in how
    finally:
        finished.set()
        thread.join(timeout=30)
    assert not errors and not thread.is_alive(), errors
    assert holder() is None  # released at the end


def _wait_for(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except psycopg.OperationalError:  # the server is restarting
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")
