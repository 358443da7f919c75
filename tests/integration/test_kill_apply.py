"""``kill -9`` of an apply in each phase of its unit's transaction (staging COPY, delete,
insert): the target keeps its old content, and nothing is left behind (no lock, no
backend, no temp file); the next apply works as if nothing happened.

The kill waits for the phase's statement to show in ``pg_stat_activity`` rather than for a random
time: a random delay lost the race on a loaded CI machine (the apply had already committed)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.pgtools import PG_URL, REPO, apply_file, make_file, scalar, sql

OVERWRITE = {"user": {"default": "overwrite"}}
ROWS = 300_000
# the statements of an overwrite unit's transaction, in the order the apply runs them
PHASES = (
    "COPY ",
    "WITH r AS (DELETE",
    "WITH r AS (INSERT",
)


def _database(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def _others(db: str) -> list[tuple[int, str, str]]:
    """Backends connected to ``db`` other than this look-up's own."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        return list(
            conn.execute(
                "SELECT pid, coalesce(state, ''), left(coalesce(query, ''), 80) "
                "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchall()
        )


def _advisory_locks(db: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = %s",
            (db,),
        ).fetchone()
        return int(row[0]) if row else 0


def _content(dsn: str) -> tuple[int, str]:
    return (
        scalar(dsn, "SELECT count(*) FROM items"),
        scalar(dsn, "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items AS t"),
    )


def _tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r
            for (r,) in conn.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'S', 'v') "
                "AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1"
            )
        ]


def _wait(what: str, done: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(done) and done():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_for_phase(
    child: subprocess.Popen[bytes], db: str, phase: str, timeout: float = 30.0
) -> list[str]:
    """The statements running on ``db`` once one of them is ``phase``'s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, f"the apply ended before it ran {phase!r}"
        running = [q for _, s, q in _others(db) if s == "active"]
        if any(q.startswith(phase) for q in running):
            return running
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for the apply to run {phase!r}")


def test_kill_9_while_applying_keeps_the_old_content_and_leaves_nothing(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);"
        f"INSERT INTO items SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, {ROWS}) g",
    )
    sql(
        target,
        "CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);"
        "INSERT INTO items SELECT g, 'old ' || g FROM generate_series(1, 5000) g",
    )
    path = tmp_path / "m.zip"
    make_file(source, path, rules=OVERWRITE)
    before, tables = _content(target), _tables(target)
    db = _database(target)
    script = (
        "import sys; from pathlib import Path; from tests.pgtools import apply_file; "
        "apply_file(Path(sys.argv[1]), sys.argv[2])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(20261130)
    killed_while = []
    for attempt, phase in enumerate(PHASES):
        scratch = tmp_path / f"tmp{attempt}"
        scratch.mkdir()
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(path), target],
            env={**env, "TMPDIR": str(scratch)},
            cwd=REPO,
        )
        try:
            running = _wait_for_phase(child, db, phase)
            time.sleep(rng.uniform(0.0, 0.02))  # a moment into that statement
            killed_while.append(running)
            assert child.poll() is None, "the apply ended before it could be killed"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        # the server notices the dead client, rolls its transaction back and ends its backends
        _wait(f"the killed apply's backends to end ({_others(db)})", lambda: not _others(db))
        assert _advisory_locks(db) == 0
        assert _content(target) == before, f"attempt {attempt}: killed while {killed_while[-1]}"
        assert _tables(target) == tables  # no stage or helper table left behind
        assert list(scratch.iterdir()) == []  # no temp file left behind
    assert all(killed_while), killed_while

    # nothing stale blocks the next run: it applies the file as usual
    results = apply_file(path, target)
    assert results["items"].status == "applied"
    assert _content(target) == _content(source)
