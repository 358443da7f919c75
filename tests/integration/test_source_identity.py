"""The source identity a migration file records, and the refusal to run it on its own source.

Real PostgreSQL: the identity is what the server reports (``pg_control_system()``, the
database's OID and name), for a superuser and for a plain login role alike.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from migration_manager import manifest as manifest_model
from migration_manager.archive import open_archive
from migration_manager.checks import refuse_own_source
from migration_manager.db_identity import DatabaseIdentity
from migration_manager.errors import ArchiveError, ConfigError
from migration_manager.execute import prepare
from migration_manager.pg import identity_of
from tests.pgtools import PG_URL, make_file, rows, sql, table_text

pytestmark = pytest.mark.postgres

TABLE = "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');"


def _file(source: str, path: Path) -> dict:
    sql(source, TABLE)
    return make_file(source, path, profile="generic", rules={"user": {"default": "overwrite"}})


def ident(
    system_identifier: str | None, oid: int, database: str, started: str | None = None
) -> DatabaseIdentity:
    return DatabaseIdentity(
        system_identifier=system_identifier,
        database_oid=oid,
        database=database,
        server_started_at=started,
    )


def test_prepare_refuses_the_file_on_its_own_source_and_accepts_another_database(
    source: str, target: str, tmp_path: Path
) -> None:
    path = tmp_path / "m.zip"
    manifest = _file(source, path)
    recorded = manifest["source"]["identity"]
    assert set(recorded) == {"system_identifier", "database_oid", "database", "server_started_at"}
    assert recorded == identity_of(source).model_dump()
    sql(source, "UPDATE t SET v = 'later'")
    with open_archive(path) as reader, pytest.raises(ConfigError) as refused:
        prepare(reader, source)
    message = str(refused.value)
    assert f"Migration file {path} was created from database {recorded['database']}" in message
    assert f"(OID {recorded['database_oid']}) of server {recorded['system_identifier']}" in message
    assert "leads to that same database" in message and "Nothing was written" in message
    assert rows(source, "SELECT v FROM t ORDER BY id") == [("later",), ("later",)]

    # another database of the same server (same system_identifier, another OID) is a target
    sql(target, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    with open_archive(path) as reader:
        plan = prepare(reader, target)
    assert [u.tables for u in plan.units] == [("t",)]
    assert identity_of(target).system_identifier == recorded["system_identifier"]
    assert table_text(target, "t") == []


def test_a_login_role_without_superuser_reads_the_same_identity(source: str) -> None:
    role = f"mm_ident_{uuid.uuid4().hex[:8]}"
    sql(PG_URL, f'CREATE ROLE "{role}" LOGIN')
    try:
        as_role = make_conninfo(source, user=role)
        assert rows(as_role, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [
            (False,)
        ]
        seen = identity_of(as_role)
        assert seen.system_identifier is not None
        assert seen == identity_of(source)
    finally:
        sql(PG_URL, f'DROP ROLE "{role}"')


def test_identity_compares_without_host_names_and_falls_back_on_the_start_time() -> None:
    a = ident("7000000000000000001", 16384, "app", "1700000000.123456")
    assert a.same_as(ident("7000000000000000001", 16384, "app", "1800000000.5"))
    assert a.same_as(ident("7000000000000000002", 16384, "app", a.server_started_at)) is False
    assert a.same_as(ident("7000000000000000001", 16385, "app")) is False
    assert a.same_as(ident("7000000000000000001", 16384, "app2")) is False
    # a role that may not read pg_control_system(): the server's start instant stands in
    unknown = ident(None, 16384, "app", a.server_started_at)
    assert a.same_as(unknown) is True
    assert a.same_as(ident(None, 16384, "app", "1700000001.0")) is None
    assert a.same_as(ident(None, 16384, "app", None)) is None


def test_a_manifest_without_identity_still_loads_and_is_not_checked(
    source: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.zip"
    manifest = _file(source, path)
    old = copy.deepcopy(manifest)
    del old["source"]["identity"]
    older = manifest_model.validate(old, name="old.zip")
    assert older.source.identity is None
    with caplog.at_level(logging.WARNING):
        refuse_own_source(older, identity_of(source), file="old.zip", target_name="connection 'x'")
    assert "old.zip records no source database identity" in caplog.text

    # the identity is a closed model: nothing else (no credential) may ride along
    leaky = copy.deepcopy(manifest)
    leaky["source"]["identity"]["password"] = "secret"
    with pytest.raises(ArchiveError) as refused:
        manifest_model.validate(leaky, name="leaky.zip")
    assert "source.identity.password" in str(refused.value)
    assert "secret" not in json.dumps(manifest)
