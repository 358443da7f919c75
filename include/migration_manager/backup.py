"""Backups of a target database with PostgreSQL's own tools, and restores from them.

A backup is ``pg_dump -Fc`` of the whole database, streamed through sha256 into a file (memory
does not grow with the database), and a :class:`BackupRecord`: versions (server, pg_dump, the
application's), the app's checked settings, size, sha256, and a **fingerprint** of every table
(row count and an order-independent content checksum) taken in the dump's own snapshot
(``pg_dump --snapshot`` with a snapshot exported by the transaction that fingerprints).

A restore first checks the file's sha256, then runs in **one transaction**: lock the tables,
drop every relation of the database (so tables a failed migration created disappear too), run
``pg_restore --clean --if-exists`` SQL, and commit only when ``pg_restore`` finished cleanly; a
failure anywhere leaves the database as it was. Afterwards every table's fingerprint is
compared with the record.

Connection details reach ``pg_dump``/``pg_restore``/``psql`` through ``PG*`` environment
variables, never the command line. Tools come from ``MM_PG_BINDIR`` when set, else ``PATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from migration_manager import pg
from migration_manager.errors import BackupError, ConfigError
from migration_manager.profiles import get_profile
from migration_manager.redaction import redact

log = logging.getLogger(__name__)

RECORD_FORMAT = "migration-manager-backup"
RECORD_VERSION = 1
IN_PLACE = "in_place"
NEW_DATABASE = "new_database"
MODES = (IN_PLACE, NEW_DATABASE)
CHUNK = 1 << 20
_ID = re.compile(r"^bk-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_USER_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
_DROP_KIND = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
    "f": "FOREIGN TABLE",
}
_ENV_OF = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "requirepeer": "PGREQUIREPEER",
}

Fingerprint = tuple[int, str]  # (rows, content checksum)


# --- tools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A PostgreSQL client program and its version."""

    name: str
    path: str
    version: str

    @property
    def major(self) -> int:
        return major_of(self.version)


def major_of(version: str) -> int:
    """``15.20 (Debian ...)`` -> 15; ``9.6.24`` -> 9."""
    m = re.match(r"\s*(\d+)", version or "")
    if not m:
        raise BackupError(f"Cannot read a PostgreSQL version from {version!r}")
    return int(m.group(1))


def install_hint(name: str, major: int | None) -> str:
    v = str(major) if major else "<server major>"
    return (
        f"install the PostgreSQL {v} client tools (Debian/Ubuntu: apt-get install postgresql-client-{v}; "
        f"RHEL/Fedora: dnf install postgresql{v}) or set MM_PG_BINDIR to the directory that holds "
        f"their {name}"
    )


def _tool_version(path: str) -> str:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackupError(f"{path} --version failed ({exc}); is it a PostgreSQL program?") from exc
    m = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", out) or re.search(r"(\d+(?:\.\d+)+)", out)
    if not m:
        raise BackupError(f"{path} --version printed no version ({out.strip()!r})")
    return m.group(1)


def find_tool(name: str, *, min_major: int | None = None) -> Tool:
    """``name`` from ``MM_PG_BINDIR`` (preferred) or ``PATH``, at least ``min_major``."""
    candidates: list[str] = []
    bindir = os.environ.get("MM_PG_BINDIR", "").strip()
    if bindir:
        p = Path(bindir, name)
        if p.is_file() and os.access(p, os.X_OK):
            candidates.append(str(p))
    found = shutil.which(name)
    if found and found not in candidates:
        candidates.append(found)
    if not candidates:
        where = f"MM_PG_BINDIR={bindir} nor PATH" if bindir else "PATH"
        raise BackupError(f"{name} was not found (in {where}): {install_hint(name, min_major)}")
    seen: list[str] = []
    for path in candidates:
        tool = Tool(name, path, _tool_version(path))
        if min_major is None or tool.major >= min_major:
            return tool
        seen.append(f"{path} is {tool.version}")
    raise BackupError(
        f"{name} is older than the server's major version {min_major} ({'; '.join(seen)}) and "
        f"cannot dump or restore it faithfully: {install_hint(name, min_major)}"
    )


def pg_env(dsn: str, **overrides: str) -> dict[str, str]:
    """The process environment plus the DSN's parts as ``PG*`` variables (no secrets on argv)."""
    env = dict(os.environ)
    for key, value in {**conninfo_to_dict(dsn), **overrides}.items():
        var = _ENV_OF.get(key)
        if var is None:
            log.warning("Connection option %s has no PG* environment variable; ignored", key)
        elif value is not None and str(value) != "":
            env[var] = str(value)
    return env


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupRecord:
    """Everything known about one backup; stored as JSON beside the dump."""

    backup_id: str
    created_at: str
    database: str
    server_version: str
    pg_dump_version: str
    size: int
    sha256: str
    seconds: float
    fingerprints: Mapping[str, Fingerprint]  # "schema.table" -> (rows, checksum)
    schemas: tuple[str, ...] = ()
    profile: str = "generic"
    app_version: str | None = None
    app_settings: Mapping[str, str] = field(default_factory=dict)
    migration_id: str | None = None
    run_id: str | None = None
    target_conn_id: str | None = None
    dump_file: str = ""

    @property
    def tables(self) -> int:
        return len(self.fingerprints)

    @property
    def rows(self) -> int:
        return sum(r for r, _ in self.fingerprints.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fingerprints"] = {k: [r, c] for k, (r, c) in sorted(self.fingerprints.items())}
        d["schemas"] = list(self.schemas)
        d["app_settings"] = dict(self.app_settings)
        return {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BackupRecord:
        if d.get("format") != RECORD_FORMAT:
            raise BackupError(
                f"Not a backup record (format {d.get('format')!r}, expected {RECORD_FORMAT!r})"
            )
        if int(d.get("format_version") or 0) > RECORD_VERSION:
            raise BackupError(
                f"Backup record version {d.get('format_version')} is newer than this tool's "
                f"({RECORD_VERSION}); upgrade migration-manager to restore it"
            )
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in d.items() if k in names}
        values["fingerprints"] = {k: (int(v[0]), str(v[1])) for k, v in d["fingerprints"].items()}
        values["schemas"] = tuple(d.get("schemas") or ())
        values["app_settings"] = dict(d.get("app_settings") or {})
        return cls(**values)

    def describe(self) -> str:
        return (
            f"{self.backup_id}  {self.created_at}  db={self.database}  app={self.app_version or '-'}  "
            f"server={self.server_version}  {self.tables} tables, {self.rows} rows, {self.size} bytes"
            + (f"  migration={self.migration_id}" if self.migration_id else "")
        )


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"bk-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_backup_id(backup_id: str) -> str:
    value = (backup_id or "").strip()
    if not _ID.match(value):
        raise ConfigError(
            f"backup_id {backup_id!r} is not a backup id (like bk-20260101T120000Z-1a2b3c); "
            "run migration_rollback without backup_id to list the available ones"
        )
    return value


def expired(records: Iterable[Mapping[str, Any] | BackupRecord], keep: int) -> list[str]:
    """Ids of the backups beyond the ``keep`` newest (oldest last)."""
    if keep < 1:
        raise ConfigError(f"backups_to_keep must be at least 1, got {keep}")
    keyed = []
    for r in records:
        d = r.to_dict() if isinstance(r, BackupRecord) else r
        keyed.append((str(d.get("created_at") or ""), str(d["backup_id"])))
    keyed.sort(reverse=True)
    return [bid for _, bid in keyed[keep:]]


# --- fingerprints ------------------------------------------------------------------------


def _user_tables(cur: psycopg.Cursor[Any], schema: str | None) -> list[tuple[str, str]]:
    query = f"""
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMA}
          AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s::text)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
    """
    return [(r[0], r[1]) for r in cur.execute(query, {"schema": schema}).fetchall()]


def _fingerprints(cur: psycopg.Cursor[Any], schema: str | None) -> dict[str, Fingerprint]:
    pg.stable_text_output(cur)
    out: dict[str, Fingerprint] = {}
    for nsp, name in _user_tables(cur, schema):
        row = cur.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(hashtextextended(mm_row_::text, 0)::numeric), 0)::text "
                "FROM {} AS mm_row_"
            ).format(pg.qualified(nsp, name))
        ).fetchone()
        assert row is not None
        out[f"{nsp}.{name}"] = (int(row[0]), str(row[1]))
    return out


def table_fingerprints(
    source: str | psycopg.Connection[Any], schema: str | None = None
) -> dict[str, Fingerprint]:
    """Row count and content checksum of every table (of ``schema``, or of every user schema).

    The checksum is the sum of a 64-bit hash of each row's text: cheap (one scan, no sort),
    independent of row order, and sensitive to duplicates. Keys are ``schema.table``. Given a
    connection, it runs in that connection's current transaction (and snapshot).
    """
    if isinstance(source, psycopg.Connection):
        with source.cursor() as cur:
            return _fingerprints(cur, schema)
    with pg.connect(source) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.cursor() as cur:
            result = _fingerprints(cur, schema)
        conn.rollback()
    return result


def compare_fingerprints(
    expected: Mapping[str, Fingerprint], actual: Mapping[str, Fingerprint]
) -> list[str]:
    """What differs, one line per table (empty: identical)."""
    problems = [f"{t}: missing (the backup has it)" for t in sorted(set(expected) - set(actual))]
    problems += [f"{t}: present but not in the backup" for t in sorted(set(actual) - set(expected))]
    for t in sorted(set(expected) & set(actual)):
        (er, ec), (ar, ac) = expected[t], actual[t]
        if er != ar:
            problems.append(f"{t}: {ar} rows, the backup has {er}")
        elif ec != ac:
            problems.append(f"{t}: same row count ({ar}) but different content")
    return problems


def _user_schemas(cur: psycopg.Cursor[Any]) -> list[str]:
    rows = cur.execute(
        f"""
        SELECT n.nspname FROM pg_namespace n WHERE {_USER_SCHEMA}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                          AND d.objid = n.oid AND d.deptype = 'e')
        ORDER BY 1
        """
    ).fetchall()
    return [r[0] for r in rows]


# --- backup ------------------------------------------------------------------------------


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
            size, digest = _dump(pg_dump, dsn, snapshot, dest)
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur:
                fingerprints = _fingerprints(cur, None)
                schemas = _user_schemas(cur)
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
        sha256=digest,
        seconds=round(time.monotonic() - started, 3),
        fingerprints=fingerprints,
        schemas=tuple(schemas),
        profile=prof.name,
        app_version=app_version,
        app_settings=prof.settings(env),
        migration_id=migration_id,
        run_id=run_id,
        target_conn_id=target_conn_id,
        dump_file=f"{bid}.dump",
    )
    log.info(
        "Backup %s: %d tables, %d rows, %d bytes (sha256 %s) in %.1f s",
        bid,
        record.tables,
        record.rows,
        size,
        digest,
        record.seconds,
    )
    return record


def _dump(tool: Tool, dsn: str, snapshot: str, dest: IO[bytes] | str | Path) -> tuple[int, str]:
    cmd = [tool.path, "--format=custom", f"--snapshot={snapshot}", "--no-password"]
    env = pg_env(dsn, application_name="migration-manager-backup")
    sha = hashlib.sha256()
    size = 0
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile())
        out: IO[bytes] = (
            dest if not isinstance(dest, str | Path) else stack.enter_context(Path(dest).open("wb"))
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(CHUNK):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            raise BackupError(
                f"pg_dump failed (exit {rc}): {_tail(err)}; no backup was taken and nothing was "
                "written to the target"
            )
    return size, sha.hexdigest()


def _tail(fh: IO[bytes], limit: int = 4000) -> str:
    fh.seek(0)
    text = fh.read().decode("utf-8", "replace").strip()
    return redact(text[-limit:]) or "(no message)"


def verify_file(path: str | Path, record: BackupRecord) -> None:
    """Refuse a backup file whose size or sha256 differs from its record."""
    sha = hashlib.sha256()
    size = 0
    try:
        with Path(path).open("rb") as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BackupError(f"Backup {record.backup_id}: cannot read {path} ({exc})") from exc
    if size != record.size or sha.hexdigest() != record.sha256:
        raise BackupError(
            f"Backup {record.backup_id} is damaged: the file has {size} bytes, sha256 {sha.hexdigest()}, "
            f"its record says {record.size} bytes, sha256 {record.sha256}. It was not restored and the "
            "target is unchanged; restore another backup (run migration_rollback without backup_id to list them)"
        )


# --- restore -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    mode: str
    database: str
    tables: int
    rows: int
    removed: tuple[str, ...]  # tables present before the restore that the backup lacks
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["removed"] = list(self.removed)
        return d


def other_clients(dsn: str) -> list[str]:
    """Other sessions connected to the database (the spec's "stop service" before a restore)."""
    with pg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT pid, usename, application_name, client_addr::text, backend_start, state
            FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND backend_type = 'client backend'
            ORDER BY backend_start
            """
        ).fetchall()
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
        relations = conn.execute(
            f"""
            SELECT n.nspname, c.relname, c.relkind FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMA}
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                              AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY c.relkind = 'S', 1, 2
            """
        ).fetchall()
        with conn.cursor() as cur:
            schemas_now = _user_schemas(cur)
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
            "SELECT to_jsonb(d) FROM pg_database d WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {}").format(
            sql.Identifier(name), sql.Literal(_encoding(conn, row[0]))
        )
        create += _locale_clause(row[0])
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


def _encoding(conn: psycopg.Connection[Any], db: Mapping[str, Any]) -> str:
    row = conn.execute("SELECT pg_encoding_to_char(%s)", (int(db["encoding"]),)).fetchone()
    assert row is not None
    return str(row[0])


def _locale_clause(db: Mapping[str, Any]) -> sql.Composable:
    parts = [
        sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(db["datcollate"]), sql.Literal(db["datctype"])
        )
    ]
    provider = db.get("datlocprovider")
    icu = db.get("daticulocale") or db.get("datlocale")
    if provider == "i" and icu:
        parts.append(sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu)))
    elif provider == "b" and icu:
        parts.append(sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(icu)))
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
            while chunk := reader.stdout.read(CHUNK):
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
                f"pg_restore failed (exit {reader_rc}): {_tail(rerr)}; the restore was rolled back, "
                "the database is as it was before"
            )
        if client_rc != 0 or not committed:
            raise BackupError(
                f"Restoring failed (psql exit {client_rc}): {_tail(perr)}; the restore was rolled "
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
