"""Taking a backup: ``pg_dump -Fc`` of the whole database and its record, from one snapshot.

The dump is streamed through sha256 into a file (memory does not grow with the database). Its
:class:`~migration_manager.backup.record.BackupRecord` holds the versions (server, pg_dump,
the application's), the app's checked settings, size, sha256, and every table's fingerprint
taken in the dump's own snapshot (``pg_dump --snapshot`` with a snapshot exported by the
transaction that fingerprints).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from migration_manager import digest, pg
from migration_manager.backup.fingerprints import fingerprints_in, user_schemas
from migration_manager.backup.record import BackupRecord, new_backup_id
from migration_manager.backup.tools import Tool, find_tool, major_of, pg_env, stderr_tail
from migration_manager.errors import BackupError
from migration_manager.profiles import get_profile
from migration_manager.store_layout import dump_name

log = logging.getLogger(__name__)


def take_backup(
    dsn: str,
    dest: IO[bytes] | str | Path,
    *,
    backup_id: str | None = None,
    profile: str | None = None,
    app_env: Mapping[str, str] | None = None,
    migration_id: str | None = None,
    run_id: str | None = None,
    target_conn_id: str | None = None,
) -> BackupRecord:
    """Dump the whole database into ``dest`` (``pg_dump -Fc``, streamed); return its record.

    The dump and the tables' fingerprints come from one snapshot: this function's REPEATABLE
    READ transaction exports it and ``pg_dump --snapshot`` imports it.
    """
    started = time.monotonic()
    bid = backup_id or new_backup_id()
    prof = get_profile(profile or "generic")
    env = dict(app_env or {})
    scope = prof.scope(env)
    engine = pg.sa_engine(dsn)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            server = str(conn.exec_driver_sql("SHOW server_version").scalar()).split()[0]
            pg_dump = find_tool("pg_dump", min_major=major_of(server))
            snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar())
            database = str(conn.exec_driver_sql("SELECT current_database()").scalar())
            app_version = prof.app_version(conn, scope)
            log.info(
                "Backing up database %s (PostgreSQL %s) with %s %s, snapshot %s",
                database,
                server,
                pg_dump.path,
                pg_dump.version,
                snapshot,
            )
            size, sha256 = _dump(pg_dump, dsn, snapshot, dest)
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur:
                fingerprints = fingerprints_in(cur, None)
                schemas = user_schemas(cur)
            conn.rollback()
    finally:
        engine.dispose()
    record = BackupRecord(
        backup_id=bid,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        database=database,
        server_version=server,
        pg_dump_version=pg_dump.version,
        size=size,
        sha256=sha256,
        seconds=round(time.monotonic() - started, 3),
        fingerprints=fingerprints,
        schemas=tuple(schemas),
        profile=prof.name,
        app_version=app_version,
        app_settings=prof.settings(env),
        migration_id=migration_id,
        run_id=run_id,
        target_conn_id=target_conn_id,
        dump_file=dump_name(bid),
    )
    log.info(
        "Backup %s: %d tables, %d rows, %d bytes (sha256 %s) in %.1f s",
        bid,
        record.tables,
        record.rows,
        size,
        sha256,
        record.seconds,
    )
    return record


def _dump(tool: Tool, dsn: str, snapshot: str, dest: IO[bytes] | str | Path) -> tuple[int, str]:
    cmd = [tool.path, "--format=custom", f"--snapshot={snapshot}", "--no-password"]
    env = pg_env(dsn, application_name="migration-manager-backup")
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile())
        out: IO[bytes] = (
            dest if not isinstance(dest, str | Path) else stack.enter_context(Path(dest).open("wb"))
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        try:
            written = digest.copy(proc.stdout, out)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            raise BackupError(
                f"pg_dump failed (exit {rc}): {stderr_tail(err)}; no backup was taken and nothing "
                "was written to the target"
            )
    return written.size, written.hexdigest()
