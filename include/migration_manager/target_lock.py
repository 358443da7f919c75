"""One migration run writes to a target database at a time: PostgreSQL advisory locks.

Two session-level advisory locks of the target database (keys ``(KEY_SPACE, 1)`` and
``(KEY_SPACE, 2)``; advisory locks are per database, so they mean "this target"):

``RUN`` (exclusive)
    Held for a run's writes. Normally by the run's *lock holder*, one connection kept open by
    one task for as long as the run's writing tasks are not finished; otherwise (a task re-run
    on its own, a run executed in one process) by each writing task for its own writes. Its
    connection's ``application_name`` (``mm-hold <token> <dag>/<run>``) and every statement it
    runs (a comment with the DAG and run ids) say which run holds it, in ``pg_stat_activity``,
    so a waiting run can name it. A crashed holder's connection dies and the lock with it.

``GATE`` (shared by writers working under their run's holder, taken exclusively for a moment)
    Whoever takes ``RUN`` then takes ``GATE`` exclusively and lets it go at once: it waits
    until writers that started under a previous holder (which may have died while they were
    writing) have finished, so two runs' writes never overlap even then.

Nothing is written to the target: the state lives in the lock table and ``pg_stat_activity``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from migration_manager import pg
from migration_manager.errors import MigrationError, TransientError

log = logging.getLogger(__name__)

KEY_SPACE = 0x4D4D4752  # "MMGR"
RUN = 1
GATE = 2
HOLD = "hold"
WRITE = "write"

_APP = re.compile(r"^mm-(hold|write) ([0-9a-f]{10}) ")
_COMMENT = re.compile(r"/\* migration-manager lock (\{.*?\}) \*/", re.S)


class TargetLockedError(MigrationError):
    """Another migration run kept the target's lock past the wait timeout."""

    def __init__(self, message: str, *, target: str = "", holder: str = ""):
        super().__init__(message)
        self.target = target  # "database prod on db:5432"
        self.holder = holder  # "migration run <dag>/<run> (its lock holder, backend pid ...)"


@dataclass(frozen=True)
class DagRunRef:
    """The Airflow run on whose behalf a lock is taken."""

    dag_id: str
    run_id: str

    @property
    def token(self) -> str:
        return hashlib.sha1(f"{self.dag_id}\n{self.run_id}".encode()).hexdigest()[:10]

    def application_name(self, role: str) -> str:
        return f"mm-{role} {self.token} {self.dag_id}/{self.run_id}"[:63]

    def comment(self, role: str) -> sql.Composed:
        """The comment every statement of a lock session starts with (read back by _COMMENT).

        JSON escapes keep the parsed value and make the text inert: ``*/`` cannot end the
        comment, and a ``%`` of a run id (``manual__50%s``) cannot be read as a placeholder
        of the statement's parameters.
        """
        doc = json.dumps({"role": role, "dag_id": self.dag_id, "run_id": self.run_id})
        inert = doc.replace("*/", "*\\/").replace("%", "\\u0025")
        return sql.SQL("/* migration-manager lock {} */ ").format(sql.SQL(inert))

    def __str__(self) -> str:
        return f"{self.dag_id}/{self.run_id}"


@dataclass(frozen=True)
class LockOwner:
    """The session holding the ``RUN`` lock, as ``pg_stat_activity`` shows it."""

    pid: int
    role: str | None
    token: str | None
    run: str
    connected_since: datetime | None

    def is_holder_of(self, ref: DagRunRef) -> bool:
        return self.role == HOLD and self.token == ref.token

    def describe(self) -> str:
        what = {HOLD: "its lock holder", WRITE: "one of its writing tasks"}.get(
            self.role or "", "a session"
        )
        since = (
            f", connected since {self.connected_since:%Y-%m-%d %H:%M:%S %Z}"
            if self.connected_since
            else ""
        )
        return f"migration run {self.run} ({what}, backend pid {self.pid}{since})"


def _run(
    conn: psycopg.Connection[Any], ref: DagRunRef, role: str, query: str, params: Any = None
) -> Any:
    row = conn.execute(ref.comment(role) + sql.SQL(query), params).fetchone()
    return row[0] if row else None


def owner(conn: psycopg.Connection[Any]) -> LockOwner | None:
    """Who holds the target's ``RUN`` lock (None when nobody does)."""
    row = conn.execute(
        """
        SELECT a.pid, a.application_name, a.query, a.backend_start
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = %s::int::oid AND l.objid = %s::int::oid AND l.objsubid = 2
        """,
        (KEY_SPACE, RUN),
    ).fetchone()
    if row is None:
        return None
    pid, app, query, since = row
    role = token = None
    run = app or f"unknown (backend pid {pid})"
    m = _APP.match(app or "")
    if m:
        role, token = m.group(1), m.group(2)
        run = (app or "")[m.end() :]
    c = _COMMENT.search(query or "")
    if c:
        try:
            doc = json.loads(c.group(1))
            run = f"{doc['dag_id']}/{doc['run_id']}"
            role = role or doc.get("role")
        except (ValueError, KeyError):
            pass
    return LockOwner(pid=pid, role=role, token=token, run=run, connected_since=since)


def _target_name(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    return f"database {info.dbname} on {info.host}:{info.port}"


def _timeout_error(
    conn: psycopg.Connection[Any], who: LockOwner | None, waited: float
) -> TargetLockedError:
    holder = who.describe() if who else "a run that has just let it go"
    target = _target_name(conn)
    return TargetLockedError(
        f"The target ({target}) is locked by {holder}; waited {waited:.0f} s "
        "(target_lock_timeout). Two migrations never write to one target at once: run this "
        "one again when that run has finished.",
        target=target,
        holder=holder,
    )


def _set_lock_timeout(
    conn: psycopg.Connection[Any], ref: DagRunRef, role: str, seconds: float | None
) -> None:
    """Set lock_timeout (None: back to the default); commented like every statement of a lock session."""
    value = (
        sql.SQL("DEFAULT") if seconds is None else sql.Literal(f"{max(1, int(seconds * 1000))}ms")
    )
    conn.execute(ref.comment(role) + sql.SQL("SET lock_timeout = {}").format(value))


def _drain(conn: psycopg.Connection[Any], ref: DagRunRef, role: str, deadline: float) -> None:
    """Wait until writers that started under a previous holder are done (GATE, exclusively)."""
    _set_lock_timeout(conn, ref, role, deadline - time.monotonic())
    try:
        _run(conn, ref, role, "SELECT pg_advisory_lock(%s, %s)", (KEY_SPACE, GATE))
        _run(conn, ref, role, "SELECT pg_advisory_unlock(%s, %s)", (KEY_SPACE, GATE))
    except psycopg.errors.LockNotAvailable as exc:
        raise TargetLockedError(
            f"The target ({_target_name(conn)}) still has writing tasks of an earlier run whose "
            "lock holder is gone; they did not finish within target_lock_timeout"
        ) from exc
    finally:
        _set_lock_timeout(conn, ref, role, None)


def _connect(dsn: str, ref: DagRunRef, role: str) -> psycopg.Connection[Any]:
    return pg.connect(dsn, autocommit=True, application_name=ref.application_name(role))


@contextmanager
def hold_run_lock(
    dsn: str,
    ref: DagRunRef,
    *,
    timeout: float,
    poll: float = 2.0,
    on_wait: Callable[[LockOwner], None] | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """Take the target's ``RUN`` lock for ``ref`` (waiting up to ``timeout`` s) and hold it.

    Yields the holding connection: call :func:`keepalive` on it now and then. The lock is
    released when the block ends (or the process dies).
    """
    conn = _connect(dsn, ref, HOLD)
    try:
        started = time.monotonic()
        deadline = started + timeout
        last: LockOwner | None = None
        while not _run(conn, ref, HOLD, "SELECT pg_try_advisory_lock(%s, %s)", (KEY_SPACE, RUN)):
            who = owner(conn)
            if who is not None and who != last and on_wait:
                on_wait(who)
            last = who or last
            if time.monotonic() >= deadline:
                raise _timeout_error(conn, who or last, time.monotonic() - started)
            time.sleep(poll)
        _drain(conn, ref, HOLD, max(deadline, time.monotonic() + poll))
        yield conn
    finally:
        conn.close()


def hold_until(
    dsn: str,
    ref: DagRunRef,
    *,
    done: Callable[[], bool],
    timeout: float,
    interval: float = 1.0,
    poll: float = 2.0,
    on_wait: Callable[[LockOwner], None] | None = None,
    on_held: Callable[[], None] | None = None,
    on_lost: Callable[[TransientError], None] | None = None,
) -> None:
    """Hold the ``RUN`` lock for ``ref`` until ``done()`` (asked every ``interval`` s).

    A restart of the target or a terminated session ends the holding connection, and the lock
    with it (the run's writing tasks lose their sessions too, fail as transient and are
    retried): the lock is taken again at once, waiting up to ``timeout`` s for the server to
    come back, for a writer of this run that took it for itself meanwhile, and for writers
    that started under the lost hold (``GATE``). Fails (``TransientError``) only when the first
    take fails for a connection, or the lock cannot be taken back within ``timeout``.
    """
    held = False
    lost_at: float | None = None
    while True:
        try:
            with hold_run_lock(dsn, ref, timeout=timeout, poll=poll, on_wait=on_wait) as conn:
                if not held and on_held:
                    on_held()
                held, lost_at = True, None
                while not done():
                    keepalive(conn, ref)
                    time.sleep(interval)
                return
        except (TransientError, psycopg.OperationalError) as exc:
            error = exc if isinstance(exc, TransientError) else TransientError(str(exc))
            if not held:
                raise error from exc
            lost_at = lost_at if lost_at is not None else time.monotonic()
            if time.monotonic() - lost_at > timeout:
                raise TransientError(
                    f"Lost the target lock of {ref} and could not take it back within "
                    f"{timeout:.0f} s (target_lock_timeout): {error}"
                ) from exc
            if on_lost:
                on_lost(error)
            time.sleep(min(interval, 1.0))


def keepalive(conn: psycopg.Connection[Any], ref: DagRunRef) -> None:
    """Check that the holding connection (and so the lock) is still there."""
    try:
        _run(conn, ref, HOLD, "SELECT 1")
    except psycopg.OperationalError as exc:
        raise TransientError(
            f"Lost the connection holding the target lock of {ref} ({exc}); "
            "writing tasks still running take the lock themselves"
        ) from exc


@contextmanager
def write_lock(
    dsn: str,
    ref: DagRunRef,
    *,
    timeout: float,
    poll: float = 2.0,
    on_wait: Callable[[LockOwner], None] | None = None,
) -> Iterator[str]:
    """Hold the right to write to the target for one task of run ``ref``.

    Under the run's own holder: share ``GATE`` with the run's other writers. With no holder:
    take ``RUN`` for this task alone (waiting for writers of a vanished holder). Held by
    another run: wait up to ``timeout`` s, then fail naming that run; held by another writer of
    this run for itself (a dry run's units): wait for it, the timeout counting from its end.
    Yields how it was got.
    """
    conn = _connect(dsn, ref, WRITE)
    try:
        started = time.monotonic()
        deadline = started + timeout
        last: LockOwner | None = None
        while True:
            who = owner(conn)
            if who is not None and who.is_holder_of(ref):
                _set_lock_timeout(conn, ref, WRITE, max(1.0, deadline - time.monotonic()))
                try:
                    _run(
                        conn,
                        ref,
                        WRITE,
                        "SELECT pg_advisory_lock_shared(%s, %s)",
                        (KEY_SPACE, GATE),
                    )
                except psycopg.errors.LockNotAvailable as exc:
                    raise _timeout_error(conn, who, time.monotonic() - started) from exc
                finally:
                    _set_lock_timeout(conn, ref, WRITE, None)
                again = owner(conn)
                if again is not None and again.is_holder_of(ref):
                    mode = f"held for this run by its lock holder (backend pid {again.pid})"
                    break
                _run(
                    conn, ref, WRITE, "SELECT pg_advisory_unlock_shared(%s, %s)", (KEY_SPACE, GATE)
                )
            elif who is None and _run(
                conn, ref, WRITE, "SELECT pg_try_advisory_lock(%s, %s)", (KEY_SPACE, RUN)
            ):
                _drain(conn, ref, WRITE, max(deadline, time.monotonic() + poll))
                mode = (
                    "taken by this task for its own writes (no lock holder of this run is running)"
                )
                break
            if who is not None and who.role == WRITE and who.token == ref.token:
                # another writer of this same run (no holder: a dry run's units, dags test)
                # has it for its own transaction: waiting for our own run is no reason to fail
                deadline = time.monotonic() + timeout
            if who is not None and who != last and on_wait:
                on_wait(who)
            last = who or last
            if time.monotonic() >= deadline:
                raise _timeout_error(conn, who or last, time.monotonic() - started)
            time.sleep(poll)
        yield mode
    finally:
        conn.close()
