"""``prepare`` leaves tables that already equal the source's out of the units — and never a changed one.

Each test syncs a small source into a target once (so both are equal), then changes one thing
on one side, writes a new migration file and asks ``prepare`` which units it maps. Real
PostgreSQL, ``generic`` profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migration_manager.archive import open_archive
from migration_manager.execute import ExecutionPlan, prepare
from migration_manager.fingerprint import RowFingerprint
from tests.pgtools import make_file, migrate, scalar, sql, table_text

pytestmark = pytest.mark.postgres

TABLES = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL DEFAULT 'x', qty integer);
CREATE INDEX items_qty ON items (qty);
INSERT INTO items VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30);
CREATE TABLE counters (id serial PRIMARY KEY, label text);
INSERT INTO counters (label) VALUES ('one'), ('two');
"""


def rules_for(rule: str) -> dict[str, Any]:
    # counters has a serial id: only overwrite / schema-only may take it
    counters = rule if rule in ("overwrite", "schema-only") else "overwrite"
    return {"rules": {"user": {"default": rule, "independent": {"counters": counters}}}}


def plan(source: str, target: str, path: Path, rule: str) -> ExecutionPlan:
    make_file(source, path, **rules_for(rule))
    with open_archive(path) as reader:
        return prepare(reader, target)


def mapped(p: ExecutionPlan) -> set[str]:
    return {t for u in p.units for t in u.tables}


def synced(source: str, target: str, tmp_path: Path, rule: str) -> Path:
    sql(source, TABLES)
    migrate(source, target, tmp_path / "first.zip", create=rules_for(rule))
    if rule != "schema-only":
        assert table_text(target, "items") == table_text(source, "items")
    return tmp_path / "again.zip"


@pytest.mark.parametrize("rule", ["overwrite", "upsert", "insert-ignore", "schema-only"])
def test_equal_tables_get_no_unit_and_say_why(
    source: str, target: str, tmp_path: Path, rule: str
) -> None:
    path = synced(source, target, tmp_path, rule)
    p = plan(source, target, path, rule)
    assert p.units == ()
    reasons = {t.table: t.reason for t in p.tables}
    assert set(reasons) == {"items", "counters"}
    assert all(t.status == "unchanged" for t in p.tables)
    if rule == "schema-only":
        assert "moves no rows" in reasons["items"]
    else:
        assert "same rows as the source (3" in reasons["items"]
        manifest_fp = _fingerprint(path, "items")
        assert manifest_fp.rows == 3


def _fingerprint(path: Path, table: str) -> RowFingerprint:
    with open_archive(path) as reader:
        entry = next(e for e in reader.manifest.tables if e.name == table)
    assert entry.structure_sha256 is not None and len(entry.structure_sha256) == 64
    assert entry.fingerprint is not None
    return entry.fingerprint


@pytest.mark.parametrize("rule", ["overwrite", "upsert"])
def test_a_changed_value_is_applied(source: str, target: str, tmp_path: Path, rule: str) -> None:
    path = synced(source, target, tmp_path, rule)
    sql(source, "UPDATE items SET qty = 11 WHERE id = 1")
    assert mapped(plan(source, target, path, rule)) == {"items"}


@pytest.mark.parametrize("rule", ["overwrite", "upsert"])
def test_a_swapped_pair_of_rows_is_applied(
    source: str, target: str, tmp_path: Path, rule: str
) -> None:
    """Same multiset of values, exchanged between two keys: the row checksums differ."""
    path = synced(source, target, tmp_path, rule)
    sql(source, "UPDATE items SET name = CASE id WHEN 1 THEN 'b' ELSE 'a' END WHERE id IN (1, 2)")
    assert mapped(plan(source, target, path, rule)) == {"items"}
    migrate(source, target, path, create=rules_for(rule))
    assert table_text(target, "items") == table_text(source, "items")


@pytest.mark.parametrize("rule", ["overwrite", "schema-only"])
def test_a_changed_column_default_is_applied(
    source: str, target: str, tmp_path: Path, rule: str
) -> None:
    path = synced(source, target, tmp_path, rule)
    sql(target, "ALTER TABLE items ALTER COLUMN name SET DEFAULT 'y'")
    assert mapped(plan(source, target, path, rule)) == {"items"}


@pytest.mark.parametrize("rule", ["overwrite", "schema-only"])
def test_a_missing_index_is_applied(source: str, target: str, tmp_path: Path, rule: str) -> None:
    path = synced(source, target, tmp_path, rule)
    sql(target, "DROP INDEX items_qty")
    assert mapped(plan(source, target, path, rule)) == {"items"}


def test_a_row_only_in_the_target_is_deleted_under_overwrite(
    source: str, target: str, tmp_path: Path
) -> None:
    path = synced(source, target, tmp_path, "overwrite")
    sql(target, "INSERT INTO items VALUES (4, 'd', 40)")
    assert mapped(plan(source, target, path, "overwrite")) == {"items"}
    migrate(source, target, path, create=rules_for("overwrite"))
    assert table_text(target, "items") == table_text(source, "items")


def test_an_extra_target_row_stays_under_upsert_and_needs_no_unit(
    source: str, target: str, tmp_path: Path
) -> None:
    path = synced(source, target, tmp_path, "upsert")
    sql(target, "INSERT INTO items VALUES (4, 'd', 40)")
    p = plan(source, target, path, "upsert")
    assert p.units == ()
    reason = {t.table: t.reason for t in p.tables}["items"]
    assert "1 more target row(s) stay under upsert" in reason
    # ... but an extra target row AND a changed source row: applied, and the extra row stays
    sql(source, "UPDATE items SET qty = 99 WHERE id = 3")
    assert mapped(plan(source, target, path, "upsert")) == {"items"}
    migrate(source, target, path, create=rules_for("upsert"))
    assert scalar(target, "SELECT qty FROM items WHERE id = 3") == 99
    assert scalar(target, "SELECT name FROM items WHERE id = 4") == "d"


def test_upsert_notices_a_target_row_that_differs(source: str, target: str, tmp_path: Path) -> None:
    path = synced(source, target, tmp_path, "upsert")
    sql(target, "INSERT INTO items VALUES (4, 'd', 40); UPDATE items SET name = 'z' WHERE id = 2")
    assert mapped(plan(source, target, path, "upsert")) == {"items"}


def test_insert_ignore_needs_only_every_source_key(
    source: str, target: str, tmp_path: Path
) -> None:
    path = synced(source, target, tmp_path, "insert-ignore")
    sql(target, "UPDATE items SET name = 'z' WHERE id = 2; INSERT INTO items VALUES (9, 'q', 1)")
    p = plan(source, target, path, "insert-ignore")
    assert p.units == ()
    assert "every source key (3) is in the target" in {t.table: t.reason for t in p.tables}["items"]
    sql(source, "INSERT INTO items VALUES (5, 'e', 50)")
    assert mapped(plan(source, target, path, "insert-ignore")) == {"items"}


def test_a_changed_sequence_position_is_applied(source: str, target: str, tmp_path: Path) -> None:
    """Same rows, but the source's sequence moved on (rows inserted then deleted)."""
    path = synced(source, target, tmp_path, "overwrite")
    sql(source, "SELECT nextval('counters_id_seq') FROM generate_series(1, 5)")
    p = plan(source, target, path, "overwrite")
    assert mapped(p) == {"counters"}
    pending = {x.table: x.changes for x in p.pending}
    assert any("setval" in c for c in pending["counters"])
    migrate(source, target, path, create=rules_for("overwrite"))
    assert scalar(target, "SELECT last_value FROM counters_id_seq") == 7
    assert plan(source, target, path, "overwrite").units == ()


def test_a_sequence_behind_its_own_rows_in_the_target_is_applied(
    source: str, target: str, tmp_path: Path
) -> None:
    path = synced(source, target, tmp_path, "schema-only")
    sql(target, "INSERT INTO counters VALUES (50, 'by hand')")
    assert mapped(plan(source, target, path, "schema-only")) == {"counters"}


def test_a_table_without_a_fingerprint_is_always_applied(
    source: str, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables above MM_FINGERPRINT_MAX_BYTES get none: their unit compares the rows itself."""
    path = synced(source, target, tmp_path, "overwrite")
    monkeypatch.setenv("MM_FINGERPRINT_MAX_BYTES", "0")
    p = plan(source, target, path, "overwrite")
    assert mapped(p) == {"items", "counters"}
    with open_archive(path) as reader:
        assert all(e.fingerprint is None for e in reader.manifest.tables)


def test_second_sync_of_the_nocobase_pair_maps_no_unit(
    nocobase_pair: tuple[str, str], tmp_path: Path
) -> None:
    staging, prod = nocobase_pair
    first = migrate(staging, prod, tmp_path / "first.zip", create={"profile": "nocobase"})
    assert any(r.status == "applied" for r in first.values())
    make_file(staging, tmp_path / "again.zip", profile="nocobase")
    with open_archive(tmp_path / "again.zip") as reader:
        p = prepare(reader, prod)
        tables = len(reader.manifest.tables)
    assert p.units == (), [u.label for u in p.units]
    assert len(p.tables) == tables
    assert {t.status for t in p.tables} <= {"unchanged", "skipped"}


def test_a_table_locked_by_another_session_is_applied_not_waited_for(
    source: str, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan reads rows to compare them; a table someone holds locked gets its unit instead."""
    import psycopg

    path = synced(source, target, tmp_path, "overwrite")
    monkeypatch.setenv("MM_PLAN_LOCK_TIMEOUT", "200ms")
    with psycopg.connect(target) as blocker:
        blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        p = plan(source, target, path, "overwrite")
        blocker.rollback()
    assert mapped(p) == {"items"}, p.pending
    pending = {x.table: x.changes for x in p.pending}
    assert pending["items"] == ["not compared (locked by another session): applied"]
    assert {t.table for t in p.tables} == {"counters"}  # the other table was still compared
