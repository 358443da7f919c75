"""Restoring a backup: in place in one transaction, or into a new database; verified either way.

A restore first checks the dump's size and sha256 against its record (:func:`verify_file`),
then runs in **one transaction**: lock the tables, drop every relation of the database (so
tables a failed migration created disappear too), run ``pg_restore --clean --if-exists`` SQL,
and commit only when ``pg_restore`` finished cleanly; a failure anywhere leaves the database as
it was. Afterwards every table's fingerprint is compared with the record. :func:`restore_refusals`
says why a backup should not be restored here (versions, other clients connected).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from migration_manager import digest, pg
from migration_manager.backup.fingerprints import (
    USER_SCHEMA,
    compare_fingerprints,
    table_fingerprints,
    user_schemas,
)
from migration_manager.backup.record import BackupRecord
from migration_manager.backup.tools import Tool, find_tool, major_of, pg_env, stderr_tail
from migration_manager.errors import BackupError, ConfigError
from migration_manager.profiles import get_profile

log = logging.getLogger(__name__)

IN_PLACE = "in_place"
NEW_DATABASE = "new_database"
MODES = (IN_PLACE, NEW_DATABASE)
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_DROP_KIND = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
}


def verify_file(path: str | Path, record: BackupRecord) -> None:
    """Refuse a backup file whose size or sha256 differs from its record."""
    try:
        found = digest.file_digest(Path(path))
    except OSError as exc:
        raise BackupError(f"Backup {record.backup_id}: cannot read {path} ({exc})") from exc
    size, sha256 = found.size, found.hexdigest()
    if size != record.size or sha256 != record.sha256:
        raise BackupError(
            f"Backup {record.backup_id} is damaged: the file has {size} bytes, sha256 {sha256}, "
            f"its record says {record.size} bytes, sha256 {record.sha256}. It was not restored and the "
            "target is unchanged; restore another backup (run migration_rollback without backup_id to list them)"
        )


class RestoreResult(BaseModel):
    """A restore that was verified against the backup's record."""

    model_config = ConfigDict(frozen=True)

    backup_id: str
    mode: str
    database: str
    tables: int
    rows: int
    removed: tuple[str, ...]  # tables present before the restore that the backup lacks
    seconds: float


_ENDING_SECONDS = 1.0  # how long a session that just disconnected may still be listed


def other_clients(dsn: str) -> list[str]:
    """Other sessions connected to the database (the spec's "stop service" before a restore).

    A client that disconnected a moment ago stays listed until its backend has exited: the list
    is read again for up to a second while it is not empty, so that only sessions that stay are
    reported.
    """
    deadline = time.monotonic() + _ENDING_SECONDS
    with pg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                """
                SELECT pid, usename, application_name, client_addr::text, backend_start, state
                FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()
                  AND backend_type = 'client backend'
                ORDER BY backend_start
                """
            ).fetchall()
            if not rows or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    return [
        f"pid {pid} user {user or '?'} application {app or '-'!r} from {addr or 'local socket'}, "
        f"connected since {start:%Y-%m-%d %H:%M:%S %Z}, {state or 'unknown state'}"
        for pid, user, app, addr, start, state in rows
    ]


def restore_refusals(dsn: str, record: BackupRecord, *, mode: str) -> list[str]:
    """Why this backup should not be restored here (empty: nothing against it). ``force`` overrides."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    problems: list[str] = []
    prof = get_profile(record.profile)
    scope = prof.scope(dict(record.app_settings))
    with pg.sa_connection(dsn) as conn:
        server = str(conn.exec_driver_sql("SHOW server_version").scalar()).split()[0]
        current = prof.app_version(conn, scope)
        conn.rollback()
    if major_of(server) != major_of(record.server_version):
        problems.append(
            f"server version: the target's server is PostgreSQL {server}, the backup was taken from "
            f"{record.server_version}; restore it into a PostgreSQL {major_of(record.server_version)} "
            "server (or set force to restore across major versions)"
        )
    if current != record.app_version:
        problems.append(
            f"application version: the target's {prof.name} is at {current or 'no version'}, the backup "
            f"was taken at {record.app_version or 'no version'} (version alignment); run the "
            f"application version the backup was taken with ({record.app_version or 'unknown'}) "
            "against the restored database, then set force"
        )
    if mode == IN_PLACE:
        clients = other_clients(dsn)
        if clients:
            lines = "\n".join(f"    {c}" for c in clients)
            problems.append(
                f"{len(clients)} other client(s) are connected to the target database; stop the "
                "application (and other writers) before restoring in place, or restore with "
                f"mode new_database:\n{lines}"
            )
    return problems


def _restore_tools(server: str, record: BackupRecord) -> tuple[Tool, Tool]:
    needed = max(major_of(server), major_of(record.pg_dump_version))
    return find_tool("pg_restore", min_major=needed), find_tool("psql", min_major=needed)


def restore_in_place(
    dsn: str, path: str | Path, record: BackupRecord, *, lock_timeout: str | None = None
) -> RestoreResult:
    """Make the database exactly the backup again, in one transaction; then verify it."""
    started = time.monotonic()
    verify_file(path, record)
    timeout = lock_timeout or os.environ.get("MM_LOCK_TIMEOUT", "60s")
    with pg.connect(dsn, autocommit=True) as conn:
        server = pg.server_version(conn)
        database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        pg_restore, psql = _restore_tools(server, record)
        with conn.cursor(row_factory=dict_row) as named:
            found = named.execute(
                sql.SQL("""
            SELECT n.nspname, c.relname, c.relkind FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {user_schema}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY c.relkind = 'S', 1, 2
            """).format(user_schema=sql.SQL(USER_SCHEMA))
            ).fetchall()
        relations = [(r["nspname"], r["relname"], r["relkind"]) for r in found]
        with conn.cursor() as cur:
            schemas_now = user_schemas(cur)
        pre = [sql.SQL("SET lock_timeout = {}").format(sql.Literal(timeout))]
        tables = [pg.qualified(s, n) for s, n, k in relations if k in ("r", "p")]
        if tables:
            pre.append(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(tables))
            )
        for s, n, k in relations:
            pre.append(
                sql.SQL("DROP {} IF EXISTS {} CASCADE").format(
                    sql.SQL(_DROP_KIND[k]), pg.qualified(s, n)
                )
            )
        if record.schemas:
            for s in schemas_now:
                if s not in record.schemas and s != "public":
                    pre.append(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s))
                    )
        pre_sql = "".join(f"{stmt.as_string(conn)};\n" for stmt in pre)
    removed = tuple(
        sorted(
            f"{s}.{n}"
            for s, n, k in relations
            if k in ("r", "p") and f"{s}.{n}" not in record.fingerprints
        )
    )
    log.info(
        "Restoring backup %s into %s in one transaction (%d relations dropped first, %d of them not in the backup)",
        record.backup_id,
        database,
        len(relations),
        len(removed),
    )
    _restore(pg_restore, psql, pg_env(dsn), path, pre_sql, clean=True)
    return _verified(dsn, record, IN_PLACE, database, removed, started)


def restore_new_database(
    dsn: str, path: str | Path, record: BackupRecord, name: str
) -> tuple[RestoreResult, str]:
    """Create database ``name`` on ``dsn``'s server and restore the backup into it.

    The database ``dsn`` names is not touched. Returns the result and the new database's DSN.
    On any failure the new database is dropped again.
    """
    started = time.monotonic()
    name = (name or "").strip()
    if not _DB_NAME.match(name):
        raise ConfigError(
            f"new_database_name {name!r}: give a database name of letters, digits, '_' or '-' "
            "(at most 63 characters, not starting with a digit)"
        )
    verify_file(path, record)
    with pg.connect(dsn, autocommit=True) as conn:
        server = pg.server_version(conn)
        pg_restore, psql = _restore_tools(server, record)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            raise BackupError(
                f"Database {name!r} already exists on this server; choose another new_database_name "
                "(a restore never overwrites a database in new_database mode)"
            )
        row = conn.execute(
            "SELECT to_jsonb(d) || jsonb_build_object('encoding_name', "
            "pg_encoding_to_char(d.encoding)) FROM pg_database d WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        create = _Locale.model_validate(row[0]).create_database(name)
        try:
            conn.execute(create)
        except psycopg.Error as exc:
            raise BackupError(
                f"Cannot create database {name!r} ({str(exc).strip()}); the target connection's "
                "user needs the CREATEDB privilege for mode new_database"
            ) from exc
    new_dsn = make_conninfo(dsn, dbname=name)
    log.info("Restoring backup %s into the new database %s", record.backup_id, name)
    try:
        _restore(pg_restore, psql, pg_env(new_dsn), path, "", clean=False)
        result = _verified(new_dsn, record, NEW_DATABASE, name, (), started)
    except BaseException:
        log.error("Restore into %s failed; dropping that new database again", name)
        with pg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        raise
    return result, new_dsn


class _Locale(BaseModel):
    """The encoding and locale of a database (its ``pg_database`` row), which a new database
    made to restore into gets too; the ICU/builtin locale's column is named by server version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    encoding_name: str
    datcollate: str
    datctype: str
    datlocprovider: str | None = None
    daticulocale: str | None = None  # PostgreSQL 15, 16
    datlocale: str | None = None  # PostgreSQL 17 and later

    def create_database(self, name: str) -> sql.Composed:
        parts = [
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
                sql.Identifier(name), sql.Literal(self.encoding_name)
            ),
            sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
                sql.Literal(self.datcollate), sql.Literal(self.datctype)
            ),
        ]
        icu = self.daticulocale or self.datlocale
        if self.datlocprovider == "i" and icu:
            parts.append(sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu)))
        elif self.datlocprovider == "b" and icu:
            parts.append(
                sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(icu))
            )
        return sql.Composed(parts)


def _restore(
    pg_restore: Tool,
    psql: Tool,
    env: dict[str, str],
    path: str | Path,
    pre_sql: str,
    *,
    clean: bool,
) -> None:
    """``pg_restore`` SQL piped into ``psql`` inside BEGIN ... COMMIT.

    ``COMMIT`` is sent only after ``pg_restore`` exited 0: a truncated or unreadable archive ends
    psql's input inside the open transaction, which the server then rolls back. (``psql -1``
    would commit whatever arrived before the end of its input.)
    """
    restore_cmd = [pg_restore.path, "--file=-", str(path)]
    if clean:
        restore_cmd[1:1] = ["--clean", "--if-exists"]
    psql_cmd = [psql.path, "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    env = {**env, "PGAPPNAME": "migration-manager-restore"}
    with tempfile.TemporaryFile() as rerr, tempfile.TemporaryFile() as perr:
        client = subprocess.Popen(
            psql_cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=perr, env=env
        )
        reader = subprocess.Popen(restore_cmd, stdout=subprocess.PIPE, stderr=rerr, env=env)
        assert client.stdin is not None and reader.stdout is not None
        committed = False
        try:
            client.stdin.write(b"BEGIN;\n" + pre_sql.encode())
            while chunk := reader.stdout.read(digest.CHUNK):
                client.stdin.write(chunk)
            if reader.wait() == 0:
                client.stdin.write(b"\nCOMMIT;\n")
                committed = True
        except BrokenPipeError:
            pass  # psql stopped at an error (ON_ERROR_STOP); its transaction is rolled back
        finally:
            if reader.poll() is None:
                reader.kill()
            reader.stdout.close()
            reader_rc = reader.wait()
            with contextlib.suppress(BrokenPipeError):
                client.stdin.close()
            client_rc = client.wait()
        if reader_rc != 0:
            raise BackupError(
                f"pg_restore failed (exit {reader_rc}): {stderr_tail(rerr)}; the restore was rolled back, "
                "the database is as it was before"
            )
        if client_rc != 0 or not committed:
            raise BackupError(
                f"Restoring failed (psql exit {client_rc}): {stderr_tail(perr)}; the restore was rolled "
                "back, the database is as it was before (if a lock timed out: stop the application "
                "and retry)"
            )


def _verified(
    dsn: str,
    record: BackupRecord,
    mode: str,
    database: str,
    removed: tuple[str, ...],
    started: float,
) -> RestoreResult:
    problems = compare_fingerprints(record.fingerprints, table_fingerprints(dsn))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems[:50])
        raise BackupError(
            f"Backup {record.backup_id} was restored into {database} but {len(problems)} table(s) "
            f"differ from the backup's record:\n{lines}\nInspect the database before using it"
        )
    result = RestoreResult(
        backup_id=record.backup_id,
        mode=mode,
        database=database,
        tables=record.tables,
        rows=record.rows,
        removed=removed,
        seconds=round(time.monotonic() - started, 3),
    )
    log.info(
        "Restored backup %s into %s: %d tables, %d rows verified against the backup's record in %.1f s",
        record.backup_id,
        database,
        result.tables,
        result.rows,
        result.seconds,
    )
    if removed:
        log.info("Dropped tables the backup does not have: %s", ", ".join(removed))
    return result
