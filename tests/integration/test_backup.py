"""Backups and restores against real PostgreSQL: ``migration_manager.backup.*`` and the store helpers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from pathlib import Path

import psycopg
import pytest

from migration_manager.backup.dump import take_backup
from migration_manager.backup.fingerprints import compare_fingerprints, table_fingerprints
from migration_manager.backup.record import BackupRecord
from migration_manager.backup.restore import (
    other_clients,
    restore_in_place,
    restore_new_database,
    restore_refusals,
)
from migration_manager.backup.tools import find_tool
from migration_manager.errors import BackupError, ConfigError
from tests.pgtools import drop_database, dsn_for, rows, scalar, sql, table_text

pytestmark = [pytest.mark.postgres]

SERVER_MAJOR = 15  # refreshed below from the server itself

SETUP = """
CREATE TABLE orders (
    id serial PRIMARY KEY, total numeric(10, 2), placed timestamptz, meta json, tags text[],
    ratio double precision, raw bytea, note text
);
INSERT INTO orders (total, placed, meta, tags, ratio, raw, note)
SELECT g * 1.25, '2026-01-01 00:00+00'::timestamptz + g * interval '1 hour',
       json_build_object('g', g), ARRAY['t' || g, NULL], 1.0 / g, decode(md5(g::text), 'hex'),
       CASE WHEN g % 7 = 0 THEN NULL ELSE E'line\\nwith ''quote'' ' || g END
FROM generate_series(1, 300) g;
CREATE TABLE customers (id bigint PRIMARY KEY, name text UNIQUE);
INSERT INTO customers VALUES (1, 'ann'), (2, 'bob');
CREATE TABLE paths (ancestor int, descendant int);  -- no primary key, duplicates
INSERT INTO paths VALUES (1, 1), (1, 1), (1, 2);
CREATE INDEX orders_total ON orders (total);
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100;
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily (day date PRIMARY KEY, n int);
INSERT INTO reporting.daily VALUES ('2026-01-01', 3);
"""


def _tables(dsn: str) -> dict[str, list[str]]:
    found = rows(
        dsn,
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    )
    return {f"{s}.{t}": table_text(dsn, t, s) for s, t in found}


def _backup(dsn: str, tmp_path: Path, **kwargs: object) -> tuple[BackupRecord, Path]:
    path = tmp_path / f"backup-{uuid.uuid4().hex[:6]}.dump"
    record = take_backup(dsn, path, **kwargs)  # type: ignore[arg-type]
    return record, path


def _server_major(dsn: str) -> int:
    return int(scalar(dsn, "SHOW server_version_num")) // 10000


def test_record_describes_the_backup(target: str, tmp_path: Path) -> None:
    sql(target, SETUP)
    sql(
        target,
        'CREATE TABLE "applicationVersion" (value varchar(255)); INSERT INTO "applicationVersion" VALUES (\'2.2.15\')',
    )
    record, path = _backup(
        target,
        tmp_path,
        profile="nocobase",
        app_env={"DB_SCHEMA": "public"},
        migration_id="mig-1",
        run_id="run-1",
        target_conn_id="prod",
    )
    data = path.read_bytes()
    assert data.startswith(b"PGDMP")  # pg_dump's custom format
    assert record.size == len(data) and record.sha256 == hashlib.sha256(data).hexdigest()
    assert record.database == target.rsplit("/", 1)[1]
    assert record.server_version == str(scalar(target, "SHOW server_version")).split()[0]
    assert int(record.pg_dump_version.split(".")[0]) >= _server_major(target)
    assert record.app_version == "2.2.15" and record.profile == "nocobase"
    assert record.app_settings["DB_SCHEMA"] == "public"
    assert (record.migration_id, record.run_id, record.target_conn_id) == ("mig-1", "run-1", "prod")
    assert record.fingerprints["public.orders"][0] == 300
    assert record.fingerprints["public.paths"][0] == 3
    assert record.fingerprints["reporting.daily"][0] == 1
    assert set(record.schemas) >= {"public", "reporting"}
    # the record survives JSON
    again = BackupRecord.parse(json.loads(record.to_json()))
    assert again == record


def test_fingerprints_see_content_not_order(target: str) -> None:
    sql(target, SETUP)
    before = table_fingerprints(target)
    sql(target, "CLUSTER orders USING orders_total")  # physical order changes
    sql(target, "VACUUM FULL paths")
    assert table_fingerprints(target) == before
    sql(target, "UPDATE customers SET name = 'ann2' WHERE id = 1")
    assert compare_fingerprints(before, table_fingerprints(target)) == [
        "public.customers: same row count (2) but different content"
    ]
    sql(
        target,
        "UPDATE customers SET name = 'ann' WHERE id = 1; DELETE FROM paths WHERE descendant = 2; INSERT INTO paths VALUES (1, 1)",
    )
    assert compare_fingerprints(before, table_fingerprints(target)) == [
        "public.paths: same row count (3) but different content"  # duplicates count
    ]
    only = table_fingerprints(target, "reporting")
    assert list(only) == ["reporting.daily"]


def test_restore_in_place_brings_back_every_table_and_drops_new_ones(
    target: str, tmp_path: Path
) -> None:
    sql(target, SETUP)
    before = _tables(target)
    record, path = _backup(target, tmp_path)
    next_id = scalar(target, "SELECT last_value FROM orders_id_seq")
    # what a migration (and then some) might do
    sql(
        target,
        """
        UPDATE orders SET total = 0 WHERE id < 50;
        DELETE FROM customers WHERE id = 2;
        INSERT INTO orders (total) SELECT 1 FROM generate_series(1, 40);
        ALTER TABLE orders ADD COLUMN added int DEFAULT 7;
        CREATE TABLE tickets (id serial PRIMARY KEY, customer bigint REFERENCES customers (id));
        INSERT INTO tickets (customer) VALUES (1);
        CREATE SEQUENCE loose_seq;
        CREATE VIEW ticket_view AS SELECT tickets.id, customers.name FROM tickets JOIN customers ON customers.id = tickets.customer;
        ALTER TABLE paths ADD COLUMN customer bigint REFERENCES customers (id);
        CREATE SCHEMA extra;
        CREATE TABLE extra.t (x int);
        DROP VIEW big_orders;
        DROP TABLE reporting.daily;
        """,
    )
    assert compare_fingerprints(record.fingerprints, table_fingerprints(target))

    result = restore_in_place(target, path, record)

    assert compare_fingerprints(record.fingerprints, table_fingerprints(target)) == []
    assert _tables(target) == before
    assert set(result.removed) == {"public.tickets", "extra.t"}
    assert result.tables == len(record.fingerprints)
    assert scalar(target, "SELECT to_regclass('public.loose_seq')") is None
    assert scalar(target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'extra'") == 0
    assert scalar(target, "SELECT count(*) FROM big_orders") == scalar(
        target, "SELECT count(*) FROM orders WHERE total > 100"
    )
    assert scalar(target, "SELECT last_value FROM orders_id_seq") == next_id
    cols = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'added'"
    assert scalar(target, cols) == 0
    assert scalar(target, "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_total'") == 1


def test_restore_keeps_owners_and_grants(target: str, tmp_path: Path) -> None:
    """Why restores keep owners and privileges (no --no-owner): an app role owning its tables
    keeps them after a restore run by another (super)user."""
    owner, reader = f"mm_owner_{uuid.uuid4().hex[:6]}", f"mm_reader_{uuid.uuid4().hex[:6]}"
    sql(target, f"CREATE ROLE {owner}; CREATE ROLE {reader}")
    try:
        sql(
            target,
            f"CREATE TABLE owned (id int PRIMARY KEY); ALTER TABLE owned OWNER TO {owner}; "
            f"GRANT SELECT ON owned TO {reader}",
        )
        record, path = _backup(target, tmp_path)
        sql(target, "INSERT INTO owned VALUES (1)")
        restore_in_place(target, path, record)
        assert scalar(target, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'") == owner
        assert scalar(target, f"SELECT has_table_privilege('{reader}', 'owned', 'SELECT')") is True
        assert scalar(target, "SELECT count(*) FROM owned") == 0
    finally:
        sql(target, "DROP TABLE IF EXISTS owned")
        sql(target, f"DROP ROLE IF EXISTS {owner}; DROP ROLE IF EXISTS {reader}")


def test_a_failed_restore_leaves_the_target_as_it_was(target: str, tmp_path: Path) -> None:
    sql(target, SETUP)
    record, path = _backup(target, tmp_path)
    sql(target, "UPDATE customers SET name = name || '!'; CREATE TABLE after_backup (x int)")
    during = _tables(target)
    # a truncated archive whose record matches it: pg_restore fails half-way through
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(path.read_bytes()[: record.size * 2 // 3])
    data = truncated.read_bytes()
    bad = record.model_copy(update=dict(size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(BackupError, match="rolled back, the database is as it was before"):
        restore_in_place(target, truncated, bad)
    assert _tables(target) == during  # nothing dropped, nothing restored


def test_a_damaged_backup_is_refused(target: str, tmp_path: Path) -> None:
    sql(target, SETUP)
    record, path = _backup(target, tmp_path)
    sql(target, "DELETE FROM orders")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=r"is damaged: .* sha256 .*It was not restored"):
        restore_in_place(target, path, record)
    assert scalar(target, "SELECT count(*) FROM orders") == 0
    name = f"mmtest_new_{uuid.uuid4().hex[:8]}"
    with pytest.raises(BackupError, match="is damaged"):
        restore_new_database(target, path, record, name)
    assert scalar(target, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == 0


def test_restore_into_a_new_database_leaves_the_current_one(target: str, tmp_path: Path) -> None:
    sql(target, SETUP)
    before = _tables(target)
    record, path = _backup(target, tmp_path)
    sql(target, "DELETE FROM orders; CREATE TABLE later (x int)")
    current = _tables(target)
    name = f"mmtest_new_{uuid.uuid4().hex[:8]}"
    try:
        result, new_dsn = restore_new_database(target, path, record, name)
        assert result.database == name and result.mode == "new_database"
        assert psycopg.conninfo.conninfo_to_dict(new_dsn)["dbname"] == name
        assert _tables(dsn_for(name)) == before
        assert _tables(target) == current
        with pytest.raises(BackupError, match="already exists"):
            restore_new_database(target, path, record, name)
    finally:
        drop_database(name)
    with pytest.raises(ConfigError, match="new_database_name"):
        restore_new_database(target, path, record, "bad name; drop")


def test_refusals(target: str, tmp_path: Path) -> None:
    sql(
        target,
        'CREATE TABLE "applicationVersion" (value varchar(255)); INSERT INTO "applicationVersion" VALUES (\'2.2.15\')',
    )
    record, _ = _backup(target, tmp_path, profile="nocobase")
    assert restore_refusals(target, record, mode="in_place") == []

    sql(target, "UPDATE \"applicationVersion\" SET value = '2.3.0'")
    (problem,) = restore_refusals(target, record, mode="new_database")
    assert "application version" in problem and "2.3.0" in problem and "2.2.15" in problem
    sql(target, "UPDATE \"applicationVersion\" SET value = '2.2.15'")

    older = record.model_copy(update=dict(server_version="14.10"))
    (problem,) = restore_refusals(target, older, mode="in_place")
    assert "server version" in problem and "14.10" in problem

    with psycopg.connect(target, application_name="nocobase-app"):
        assert any("nocobase-app" in c for c in other_clients(target))
        (problem,) = restore_refusals(target, record, mode="in_place")
        assert "1 other client(s)" in problem and "nocobase-app" in problem
        assert restore_refusals(target, record, mode="new_database") == []
    with pytest.raises(ConfigError, match="mode"):
        restore_refusals(target, record, mode="sideways")


def _fake_tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_pg_dump_missing_or_too_old(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    major = _server_major(target)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MM_PG_BINDIR", str(empty))
    monkeypatch.setenv("PATH", str(empty))
    dest = tmp_path / "never.dump"
    with pytest.raises(BackupError, match=rf"pg_dump was not found.*postgresql-client-{major}"):
        take_backup(target, dest)

    old = tmp_path / "old"
    _fake_tool(old, "pg_dump", 'echo "pg_dump (PostgreSQL) 12.22"\n')
    monkeypatch.setenv("MM_PG_BINDIR", str(old))
    with pytest.raises(
        BackupError,
        match=rf"older than the server's major version {major}.*12\.22.*apt-get install postgresql-client-{major}",
    ):
        take_backup(target, dest)
    assert not dest.exists() or dest.stat().st_size == 0


def test_no_password_on_the_command_line(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = find_tool("pg_dump").path
    spy = tmp_path / "spy"
    log = tmp_path / "argv.txt"
    _fake_tool(
        spy,
        "pg_dump",
        f'if [ "$1" != "--version" ]; then echo "$@" > {log}; echo "PGPASSWORD=$PGPASSWORD" >> {log}; fi\n'
        f'exec {real} "$@"\n',
    )
    monkeypatch.setenv("MM_PG_BINDIR", str(spy))
    parts = psycopg.conninfo.conninfo_to_dict(target)
    with_password = psycopg.conninfo.make_conninfo(target, password="hunter2-secret")
    assert parts.get("password") is None  # trust auth here: the password is just carried along
    take_backup(with_password, tmp_path / "b.dump")
    argv, env_line = log.read_text().splitlines()
    assert "hunter2" not in argv and "dbname" not in argv and "--snapshot=" in argv
    assert env_line == "PGPASSWORD=hunter2-secret"


def test_retention_keeps_the_newest(target: str, tmp_path: Path) -> None:
    from migration_manager.airflow.store import backup_dir, backup_records, save_backup

    sql(target, SETUP)
    key = f"retention-{uuid.uuid4().hex[:6]}"
    made = [save_backup(target, key, keep=3)[0].backup_id for _ in range(5)]
    kept = [r.backup_id for r in backup_records(key)]
    assert kept == made[:-4:-1]  # the three newest, newest first
    folder = Path(str(backup_dir(key).path))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{b}.{ext}" for b in made[2:] for ext in ("dump", "json")
    )
    save_backup(target, key, keep=1)
    assert len(backup_records(key)) == 1 and len(os.listdir(folder)) == 2
