"""Helpers for tests that touch PostgreSQL (imported by tests as ``tests.pgtools``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "nocobase"
PG_URL = os.environ.get("MM_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


def dsn_for(database: str, base: str = PG_URL) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_URL, autocommit=True)


def create_database(prefix: str = "mmtest") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(dsn: str, statements: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements, params)


def rows(dsn: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(query, params).fetchall())


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    result = rows(dsn, query, params)
    return result[0][0] if result else None


def table_text(dsn: str, table: str, schema: str = "public") -> list[str]:
    """Every row of a table as text, sorted: equal lists mean equal contents."""
    return [
        r[0]
        for r in rows(
            dsn,
            f'SELECT t::text FROM "{schema}"."{table}" AS t ORDER BY 1',
        )
    ]


def tables_text(dsn: str, schema: str = "public") -> dict[str, list[str]]:
    """Every table of ``schema`` by name, with ``table_text``: equal dicts mean untouched tables."""
    names = [
        r[0]
        for r in rows(
            dsn, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
        )
    ]
    return {name: table_text(dsn, name, schema) for name in names}


@contextmanager
def nocobase_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases loaded from the real NocoBase fixture, dropped afterwards:
    ``{"staging": dsn, "prod": dsn}``."""
    staging, prod = create_database(), create_database()
    try:
        load_dump(dsn_for(staging), FIXTURES / "dev_staging.sql")
        load_dump(dsn_for(prod), FIXTURES / "dev_prod.sql")
        yield {"staging": dsn_for(staging), "prod": dsn_for(prod)}
    finally:
        drop_database(staging)
        drop_database(prod)


def psql_bin() -> str:
    bindir = os.environ.get("MM_PG_BINDIR")
    if bindir and Path(bindir, "psql").exists():
        return str(Path(bindir, "psql"))
    found = shutil.which("psql")
    assert found, (
        "psql is needed to load the NocoBase fixture dumps (apt-get install postgresql-client)"
    )
    return found


def load_dump(dsn: str, dump: Path) -> None:
    subprocess.run(
        [psql_bin(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(dump)],
        check=True,
        capture_output=True,
    )


_SIGNING: list[Any] = []
SIGNER = "test-suite"


def signing_key() -> Any:
    """The test session's Ed25519 key (generated once), the one conftest.py makes trusted."""
    from migration_manager.signing import SigningKey, generate

    if not _SIGNING:
        _SIGNING.append(SigningKey(SIGNER, generate().private_key))
    return _SIGNING[0]


def make_file(source_dsn: str, path: Path, **kwargs: Any) -> dict[str, Any]:
    """Create a migration file at ``path`` from ``source_dsn``; returns its manifest.

    Signed with the session's key (trusted through ``AIRFLOW_VAR_MIGRATION_TRUSTED_KEYS``)
    unless ``signing_key=None`` is given.
    """
    from migration_manager.create import create_migration

    kwargs.setdefault("profile", "generic")
    kwargs.setdefault("signing_key", signing_key())
    with path.open("wb") as fh:
        _result, manifest = create_migration(source_dsn, fh, **kwargs)
    return manifest.document()


def bare_manifest(profile: str = "nocobase", **source: Any) -> Any:
    """A valid manifest of no tables whose ``source`` has the given keys (else empty ones)."""
    from migration_manager.manifest import Manifest

    group = {"default": "schema-only", "independent": {}}
    return Manifest.model_validate(
        {
            "format": "migration-manager",
            "format_version": 1,
            "id": "m1",
            "created_at": "2026-01-01T00:00:00+00:00",
            "tool_version": "0",
            "profile": profile,
            "rules": {"system": group, "user": group},
            "source": {
                "database": "staging",
                "server_version": None,
                "app_version": None,
                "app_settings": {},
                "schema": "public",
                "table_prefix": "",
            }
            | source,
            "environment": {"variables": [], "referenced_unknown": []},
            "plugins": [],
            "tables": [],
            "units": [],
            "warnings": [],
            "members": {},
        }
    )


def apply_file(path: Path, target_dsn: str, **kwargs: Any) -> dict[str, Any]:
    """Execute a migration file on ``target_dsn``; returns each table's result by name."""
    from migration_manager.archive import open_archive
    from migration_manager.execute import execute_migration

    with open_archive(path) as reader:
        plan, results = execute_migration(reader, target_dsn, **kwargs)
    out: dict[str, Any] = {t.table: t for t in plan.tables}
    for unit in results:
        for t in unit.tables:
            out[t.table] = t
    return out


def migrate(
    source_dsn: str,
    target_dsn: str,
    path: Path,
    *,
    create: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    make_file(source_dsn, path, **(create or {}))
    return apply_file(path, target_dsn, **kwargs)
