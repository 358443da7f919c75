"""The target lock on real PostgreSQL: one run writes at a time, waiters name the holder, crashes free it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest

from migration_manager.target_lock import (
    HOLD,
    WRITE,
    DagRunRef,
    TargetLockedError,
    hold_run_lock,
    owner,
    write_lock,
)

pytestmark = pytest.mark.postgres

RUN1 = DagRunRef("migration_sync", "manual__2026-11-26T10:00:00.123456+00:00")
RUN2 = DagRunRef("sync_staging_to_prod", "scheduled__2026-11-26T02:00:00+00:00")


def _owner(dsn: str):  # type: ignore[no-untyped-def]
    with psycopg.connect(dsn, autocommit=True) as conn:
        return owner(conn)


def _gate_waiters(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objid = 2 AND objsubid = 2"
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def dsn(target: str) -> Iterator[str]:
    yield target


def test_holder_is_named_and_a_second_run_times_out(dsn: str) -> None:
    with hold_run_lock(dsn, RUN1, timeout=1):
        who = _owner(dsn)
        assert who is not None and who.is_holder_of(RUN1) and who.role == HOLD
        assert who.run == str(RUN1)  # full ids, from the statement's comment
        seen = []
        started = time.monotonic()
        with (
            pytest.raises(
                TargetLockedError,
                match=r"locked by migration run migration_sync/manual__2026-11-26T10:00:00\.123456\+00:00",
            ) as err,
            hold_run_lock(dsn, RUN2, timeout=1, poll=0.1, on_wait=seen.append),
        ):
            pass
        assert 1 <= time.monotonic() - started < 5
        assert "its lock holder" in str(err.value) and "waited 1 s" in str(err.value)
        assert seen and seen[0].run == str(RUN1)
        # a writer of the other run is refused the same way
        with (
            pytest.raises(TargetLockedError, match="migration_sync/manual__"),
            write_lock(dsn, RUN2, timeout=0.5, poll=0.1),
        ):
            pass
    assert _owner(dsn) is None


def test_writers_of_the_holding_run_share_it(dsn: str) -> None:
    with (
        hold_run_lock(dsn, RUN1, timeout=1),
        write_lock(dsn, RUN1, timeout=1) as first,
        write_lock(dsn, RUN1, timeout=1) as second,
    ):
        assert "lock holder" in first and "lock holder" in second
        assert _owner(dsn).is_holder_of(RUN1)  # type: ignore[union-attr]


def test_without_holder_a_writer_takes_the_lock_for_itself(dsn: str) -> None:
    with write_lock(dsn, RUN1, timeout=1) as how:
        assert "taken by this task" in how
        who = _owner(dsn)
        assert who is not None and who.role == WRITE and who.run == str(RUN1)
        with (
            pytest.raises(TargetLockedError, match="one of its writing tasks"),
            hold_run_lock(dsn, RUN2, timeout=0.5, poll=0.1),
        ):
            pass
    assert _owner(dsn) is None


def test_waiter_gets_the_lock_when_the_holder_ends(dsn: str) -> None:
    got = threading.Event()
    with ExitStack() as stack:
        stack.enter_context(hold_run_lock(dsn, RUN1, timeout=1))

        saw: list[object] = []

        def second() -> None:
            with hold_run_lock(dsn, RUN2, timeout=20, poll=0.1, on_wait=saw.append):
                got.set()

        thread = threading.Thread(target=second)
        thread.start()
        _wait_until(lambda: bool(saw))  # the waiter has seen RUN1 holding the lock
        assert not got.is_set()
    thread.join(20)
    assert got.is_set()


def test_a_crashed_holder_frees_the_lock(dsn: str) -> None:
    with hold_run_lock(dsn, RUN1, timeout=1):
        who = _owner(dsn)
        assert who is not None
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (who.pid,))
        _wait_until(lambda: _owner(dsn) is None)
        with hold_run_lock(dsn, RUN2, timeout=1):
            assert _owner(dsn).is_holder_of(RUN2)  # type: ignore[union-attr]


def test_new_holder_waits_for_writers_of_a_vanished_holder(dsn: str) -> None:
    """RUN1's holder dies while one of its writers is still writing: RUN2 must wait for that writer."""
    acquired = threading.Event()
    order: list[str] = []
    with hold_run_lock(dsn, RUN1, timeout=1):
        who = _owner(dsn)
        assert who is not None
        writer = ExitStack()
        writer.enter_context(write_lock(dsn, RUN1, timeout=1))
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (who.pid,))
        _wait_until(lambda: _owner(dsn) is None)

        def second() -> None:
            with hold_run_lock(dsn, RUN2, timeout=20, poll=0.1):
                order.append("run2 holds")
                acquired.set()

        thread = threading.Thread(target=second)
        thread.start()
        _wait_until(lambda: _gate_waiters(dsn) == 1)  # RUN2 holds RUN and waits for GATE
        assert _owner(dsn).is_holder_of(RUN2)  # type: ignore[union-attr]
        assert not acquired.is_set(), "RUN2 went on while a RUN1 writer was still writing"
        order.append("run1 writer done")
        writer.close()
        thread.join(20)
    assert order == ["run1 writer done", "run2 holds"]


def test_writers_of_one_run_without_holder_wait_for_each_other_past_the_timeout(
    dsn: str,
) -> None:
    """A dry run's units (no run-wide holder) take the lock one after another: a unit waiting for
    another unit of its own run does not time out, while another run's writer does."""
    got: list[float] = []
    with write_lock(dsn, RUN1, timeout=0.5) as how:
        assert "taken by this task" in how

        def second_unit() -> None:
            t0 = time.monotonic()
            with write_lock(dsn, RUN1, timeout=0.5, poll=0.1):
                got.append(time.monotonic() - t0)

        thread = threading.Thread(target=second_unit)
        thread.start()
        with (
            pytest.raises(TargetLockedError, match="one of its writing tasks"),
            write_lock(dsn, RUN2, timeout=0.5, poll=0.1),
        ):
            pass
        time.sleep(1.5)  # three times the timeout
        assert not got
    thread.join(10)
    assert got and got[0] >= 1.5
    assert _owner(dsn) is None


def test_run_ids_with_placeholders_and_comment_ends_hold_and_are_named(dsn: str) -> None:
    """A run id is the user's (``dag_run_id`` of the REST API): "%s" in it is not a placeholder
    of the lock statements' parameters, "*/" does not end their comment (issue 22)."""
    odd = DagRunRef("migration_sync", "manual__50%s */ SELECT 1; %(x)s")
    with hold_run_lock(dsn, odd, timeout=1):
        who = _owner(dsn)
        assert who is not None and who.is_holder_of(odd) and who.run == str(odd)
        with write_lock(dsn, odd, timeout=1):
            pass
        named = r"manual__50%s \*/ SELECT 1; %\(x\)s"
        with pytest.raises(TargetLockedError, match=named), hold_run_lock(dsn, RUN2, timeout=1):
            pass
    assert _owner(dsn) is None
