"""Create a migration file from the source database, in one consistent snapshot."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import sqlalchemy as sa
from psycopg import sql

from migration_manager import __version__, pg
from migration_manager.archive import (
    CHUNK,
    FORMAT_NAME,
    FORMAT_VERSION,
    ArchiveWriter,
    data_member,
)
from migration_manager.config import MigrationRules, check_profile
from migration_manager.errors import ConfigError
from migration_manager.fingerprint import max_bytes, row_fingerprint, table_sizes
from migration_manager.manifest import (
    Environment,
    Manifest,
    MemberInfo,
    Plugin,
    Source,
    Table,
    Variable,
)
from migration_manager.plan import resolve, units
from migration_manager.profiles import get_profile
from migration_manager.progress import Progress
from migration_manager.references import compared_columns
from migration_manager.schema import estimated_rows, list_tables, reflect_tables
from migration_manager.signing import SigningKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreateResult:
    id: str
    tables: int
    data_tables: int
    rows: int
    bytes: int
    seconds: float
    warnings: tuple[str, ...]


class _References:
    """Finds ``{{$env.NAME}}`` references in COPY chunks (a tail is kept across chunk borders)."""

    def __init__(self, pattern: re.Pattern[bytes] | None):
        self.pattern = pattern
        self.found: set[str] = set()
        self._tail = b""

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.pattern is None:
            return
        data = self._tail + bytes(chunk)
        if b"$env." in data:
            self.found.update(m.group(1).decode("ascii") for m in self.pattern.finditer(data))
        self._tail = data[-128:]


def _copy_out(
    copy: Iterable[bytes | memoryview],
    stream: IO[bytes],
    progress: Progress,
    references: _References,
) -> None:
    """Pass a COPY's output on to ``stream`` in pieces of about ``CHUNK`` bytes.

    The server sends one message per row: compressing, counting and scanning each row alone
    cost about as much again as reading the rows (2.2 M rows of ``make bench``); gathered,
    they cost a few calls per MiB.
    """
    buffer = bytearray()
    for chunk in copy:
        buffer += chunk
        if len(buffer) >= CHUNK:
            stream.write(buffer)
            progress.add_bytes(len(buffer))
            references.feed(buffer)
            buffer.clear()
    if buffer:
        stream.write(buffer)
        progress.add_bytes(len(buffer))
        references.feed(buffer)


def new_migration_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"mig-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def create_migration(
    source_dsn: str,
    out: IO[bytes],
    *,
    profile: str | None = "nocobase",
    rules: MigrationRules | Mapping[str, Any] | str | None = None,
    app_env: Mapping[str, str] | None = None,
    migration_id: str | None = None,
    compression_level: int = 1,
    signing_key: SigningKey | None = None,
) -> tuple[CreateResult, Manifest]:
    """Write a migration file for ``source_dsn`` into ``out`` (a writable binary file).

    Every selected table is read inside one REPEATABLE READ, READ ONLY transaction, so the
    file is one consistent snapshot of the source. Data streams from COPY through zstd into the
    archive; memory does not grow with table size. With ``signing_key`` the manifest is signed
    (``manifest.json.sig``); without it the file is unsigned.
    """
    started = time.monotonic()
    prof = get_profile(profile)
    ruleset = rules if isinstance(rules, MigrationRules) else MigrationRules.parse(rules)
    env = dict(app_env or {})
    scope = prof.scope(env)
    mid = migration_id or new_migration_id()

    engine = pg.sa_engine(source_dsn)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            has_schema = conn.execute(
                sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": scope.schema}
            ).first()
            if not has_schema:
                raise ConfigError(
                    f"The source database has no schema {scope.schema!r} (DB_SCHEMA); "
                    "check the source connection's app_env"
                )
            prof.require_app(conn, scope, "source")
            tables = [t for t in list_tables(conn, scope.schema) if scope.contains(t)]
            structures = reflect_tables(conn, scope.schema, tables)
            knowledge = prof.knowledge(conn, scope)
            classes = prof.classify(conn, scope, tables)
            plans, warnings = resolve(structures, classes, ruleset, scope)
            refs, natural = prof.references(conn, scope, structures)
            if knowledge is not None and knowledge.warning:
                warnings.insert(0, knowledge.warning)
            storage = prof.storage_note(conn, scope)
            if storage:
                warnings.append(storage)
            unit_list = units(plans, structures)
            estimates = estimated_rows(conn, scope.schema)
            app_version = prof.app_version(conn, scope)
            variables = prof.environment_variables(conn, scope)
            plugins = prof.enabled_plugins(conn, scope)
            references = _References(prof.env_reference)
            database = conn.exec_driver_sql("SELECT current_database()").scalar()
            version = conn.exec_driver_sql("SHOW server_version").scalar()
            encoding = conn.exec_driver_sql("SHOW server_encoding").scalar()
            driver = conn.connection.driver_connection
            assert driver is not None
            # the server's own identity: lets the executing side refuse its own source database
            identity = pg.database_identity(driver)
            for w in warnings:
                log.warning("%s", w)

            writer = ArchiveWriter(out, level=compression_level)
            raw = conn.connection.driver_connection
            assert raw is not None
            table_entries = []
            total_rows = 0
            with raw.cursor() as cur:
                sizes = table_sizes(cur, scope.schema)
            fingerprint_limit = max_bytes()
            for index, p in enumerate(plans, start=1):
                structure = structures[p.name]
                entry: dict[str, Any] = {
                    **p.model_dump(by_alias=True),
                    "structure": structure,
                    "structure_sha256": structure.digest(),
                    "estimated_rows": estimates.get(p.name, 0),
                    "data": None,
                }
                if p.name in natural:
                    entry["natural_key"] = list(natural[p.name])
                if p.moves_data:
                    member = data_member(index)
                    columns = list(structure.data_columns)
                    copy_sql = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(
                        pg.qualified(scope.schema, p.name), pg.ident_list(columns)
                    )
                    progress = Progress(f"read {p.name}", estimates.get(p.name, 0), log)
                    with writer.data(member) as stream, raw.cursor() as cur:
                        with cur.copy(copy_sql) as copy:
                            _copy_out(copy, stream, progress, references)
                        rows = cur.rowcount
                    progress.done(rows)
                    total_rows += rows
                    entry["data"] = {
                        "member": member,
                        "columns": columns,
                        "rows": rows,
                        "raw_bytes": progress.bytes,
                        "format": "binary",
                    }
                    if sizes.get(p.name, 0) <= fingerprint_limit:
                        # in the file's snapshot: plan compares it with the target's
                        compared, key = compared_columns(
                            columns, structure.primary_key, natural.get(p.name)
                        )
                        with raw.cursor() as cur:
                            entry["fingerprint"] = row_fingerprint(
                                cur, scope.schema, p.name, compared, rule=p.rule, key=key
                            ).model_dump()
                table_entries.append(entry)
            conn.rollback()
    finally:
        engine.dispose()

    manifest = Manifest(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        id=mid,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        profile=check_profile(prof.name),
        # which version of the profile's code-derived table knowledge classified the tables
        profile_knowledge=(knowledge.recorded() if knowledge is not None else None),
        rules=ruleset,
        source=Source.model_validate(
            {
                "database": database,
                "server_version": version,
                "server_encoding": encoding,  # the bytes the row fingerprints were taken over
                "app_version": app_version,
                "app_settings": prof.settings(env),
                "schema": scope.schema,
                "table_prefix": scope.prefix,
                "identity": identity,
            }
        ),
        environment=Environment(
            # names and types only: values (and secrets) never enter the file
            variables=[
                Variable(name=name, type=kind, referenced=name in references.found)
                for name, kind in variables
            ],
            referenced_unknown=sorted(references.found - {name for name, _ in variables}),
        ),
        plugins=[Plugin.model_validate(p) for p in plugins],
        tables=[Table.model_validate(e) for e in table_entries],
        units=list(unit_list),
        references=list(refs),
        warnings=warnings,
        members={m: MemberInfo.model_validate(info) for m, info in writer.members.items()},
    )
    writer.finish(manifest.document(), signing_key)
    total_bytes = sum(int(m["bytes"]) for m in writer.members.values())
    result = CreateResult(
        id=mid,
        tables=len(plans),
        data_tables=sum(1 for p in plans if p.moves_data),
        rows=total_rows,
        bytes=total_bytes,
        seconds=round(time.monotonic() - started, 3),
        warnings=tuple(warnings),
    )
    log.info(
        "Migration %s: %d tables (%d with data, %d rows, %d bytes compressed) in %.1f s",
        mid,
        result.tables,
        result.data_tables,
        result.rows,
        result.bytes,
        result.seconds,
    )
    return result, manifest
