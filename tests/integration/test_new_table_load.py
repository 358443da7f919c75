"""A unit that creates a table and loads it: keys after the load, the source's fingerprint kept.

- A new table gets its primary key, unique constraints and indexes after its COPY load, then
  its foreign keys (``pg_restore``'s order), all in the unit's transaction: the target's
  structure is exactly the source's (``pg_dump -s``) and the recorded DDL is in that order.
- The fingerprint a unit records before its commit is the source's (from the file, no scan)
  only when the COPY into the empty table provably left the source's rows; it is always what
  a fresh scan of the target gives.

Real PostgreSQL, the engine's own create and apply paths.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_manager import row_writes
from migration_manager.archive import open_archive
from migration_manager.execute import apply as apply_module
from migration_manager.execute import prepare, unit_entries
from migration_manager.execute.apply import apply_unit
from migration_manager.execute.results import UnitResult
from migration_manager.fingerprint import RowFingerprint
from migration_manager.prod_edits import current_fingerprint
from migration_manager.schema import StatementRecorder
from tests.pgtools import make_file, migrate, sql
from tests.schematools import assert_same, schema_dump

pytestmark = pytest.mark.postgres

OVERWRITE_ALL = {"rules": {"system": {"default": "overwrite"}, "user": {"default": "overwrite"}}}

LINKED = """
CREATE TYPE mood AS ENUM ('ok', 'meh');
CREATE TABLE parent (
    id bigint PRIMARY KEY,
    code text CONSTRAINT parent_code_key UNIQUE,
    email text,
    m mood
);
CREATE UNIQUE INDEX parent_lower_email ON parent (lower(email));
CREATE INDEX parent_code_desc ON parent (code DESC NULLS LAST) WHERE id > 0;
CREATE TABLE child (
    id serial PRIMARY KEY,
    parent_id bigint REFERENCES parent (id) ON DELETE CASCADE,
    self_id integer REFERENCES child (id) DEFERRABLE INITIALLY DEFERRED,
    note text CONSTRAINT child_note_ck CHECK (note <> ''),
    CONSTRAINT child_parent_note UNIQUE (parent_id, note)
);
CREATE INDEX child_parent ON child (parent_id);
INSERT INTO parent SELECT g, 'c' || g, 'E' || g || '@x', 'ok' FROM generate_series(1, 300) g;
INSERT INTO child (parent_id, self_id, note) SELECT g, NULL, 'n' FROM generate_series(1, 300) g;
UPDATE child SET self_id = id - 1 WHERE id > 1;
"""


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every Alembic statement and every COPY of a unit, in the order they ran."""
    seen: list[tuple[str, str]] = []
    record = StatementRecorder._record
    copy_in = row_writes.copy_in

    def spy_record(self: StatementRecorder, *args: Any) -> None:
        seen.append(("ddl", args[2].strip()))
        record(self, *args)

    def spy_copy(cur: Any, counts: Any, into: Any, t: row_writes.Target, *rest: Any) -> int:
        seen.append(("copy", t.name))
        return copy_in(cur, counts, into, t, *rest)

    monkeypatch.setattr(StatementRecorder, "_record", spy_record)
    monkeypatch.setattr(row_writes, "copy_in", spy_copy)
    yield seen


def _kind(stmt: str) -> str:
    if stmt.startswith("CREATE TABLE"):
        return "table"
    if "FOREIGN KEY" in stmt:
        return "foreign key"
    if stmt.startswith(("CREATE INDEX", "CREATE UNIQUE INDEX")) or "ADD CONSTRAINT" in stmt:
        return "key"
    return "other"


def test_new_tables_get_keys_after_the_load_and_the_sources_structure(
    source: str,
    target: str,
    new_db: Callable[[], str],
    tmp_path: Path,
    events: list[tuple[str, str]],
) -> None:
    sql(source, LINKED)
    results = migrate(source, target, tmp_path / "m.zip", create=OVERWRITE_ALL)
    assert_same(source, target)  # pg_dump -s, every row, every sequence

    parent, child = results["parent"], results["child"]
    assert (parent.inserted, child.inserted) == (300, 300)
    for r in (parent, child):
        create = [s for s in r.ddl if s.startswith("CREATE TABLE")]
        assert len(create) == 1
        for inline in ("PRIMARY KEY", "UNIQUE", "REFERENCES"):
            assert inline not in create[0], (r.table, create[0])
        kinds = [_kind(s) for s in r.ddl if _kind(s) != "other"]
        first_key = kinds.index("key")
        # the table, then its keys and indexes, then its foreign keys
        assert kinds == ["table"] + ["key"] * (len(kinds) - 1 - kinds.count("foreign key")) + [
            "foreign key"
        ] * kinds.count("foreign key"), (r.table, r.ddl)
        assert first_key == 1
    assert [_kind(s) for s in parent.ddl].count("key") == 4  # pkey, unique, two indexes
    assert [_kind(s) for s in child.ddl].count("key") == 3  # pkey, unique, one index
    assert [_kind(s) for s in child.ddl].count("foreign key") == 2
    assert [_kind(s) for s in parent.ddl].count("foreign key") == 0

    # as executed: both tables created, both loaded, then keys, then foreign keys
    order = [kind if what == "ddl" else "copy" for what, s in events for kind in [_kind(s)]]
    order = [k for k in order if k != "other"]
    assert order == (
        ["table", "table", "copy", "copy"]
        + ["key"] * order.count("key")
        + ["foreign key"] * order.count("foreign key")
    ), events
    # every statement executed is recorded, each under its table, in execution order
    ran = [s for what, s in events if what == "ddl"]
    recorded = [s for s in parent.ddl + child.ddl if s in ran]
    assert sorted(recorded) == sorted(ran)
    for r in (parent, child):
        mine = [s for s in ran if s in r.ddl]
        assert mine == [s for s in r.ddl if s in ran]

    # the statements as schema.sql lists them (by table, referenced first) run on an empty
    # database and give the same structure
    replay = new_db()
    with psycopg.connect(replay, autocommit=True) as conn:
        for stmt in parent.ddl + child.ddl:
            conn.execute(stmt.encode())
    assert schema_dump(replay) == schema_dump(source)

    # the foreign keys hold: a child row whose parent is missing is refused
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        sql(target, "INSERT INTO child (parent_id, note) VALUES (100000, 'x')")
    again = migrate(source, target, tmp_path / "again.zip", create=OVERWRITE_ALL)
    assert {again[t].status for t in ("parent", "child")} == {"unchanged"}


def test_a_new_table_an_existing_one_now_refers_to_keeps_its_keys_first(
    source: str, target: str, tmp_path: Path
) -> None:
    """The existing table's new foreign key is added in its structure step, before any load:
    the new table it refers to must have its key by then (it is created with it)."""
    sql(
        source,
        "CREATE TABLE a (id integer PRIMARY KEY, v text);"
        "CREATE TABLE b (id integer PRIMARY KEY, a_id integer REFERENCES a (id));"
        "INSERT INTO a SELECT g, 'v' FROM generate_series(1, 50) g;"
        "INSERT INTO b SELECT g, g FROM generate_series(1, 50) g;",
    )
    sql(target, "CREATE TABLE b (id integer PRIMARY KEY, a_id integer)")
    results = migrate(source, target, tmp_path / "m.zip", create=OVERWRITE_ALL)
    assert_same(source, target)
    assert "PRIMARY KEY" in next(s for s in results["a"].ddl if s.startswith("CREATE TABLE"))


# --------------------------------------------------------------------------- fingerprints

ITEMS = """
CREATE TABLE items (
    id integer PRIMARY KEY, name text, price numeric(10, 2), at timestamptz, tags text[], f float8
);
INSERT INTO items SELECT g, 'n' || g, g / 7.0, '2026-01-01'::timestamptz + g * interval '1 h',
    ARRAY['a', 'b' || g], g / 3.0 FROM generate_series(1, 500) g;
CREATE TABLE fees (id integer PRIMARY KEY, fee money);
INSERT INTO fees SELECT g, g * 1.25 FROM generate_series(1, 20) g;
"""


def _apply_all(
    path: Path, target: str, scanned: list[str]
) -> tuple[dict[str, RowFingerprint | None], dict[str, RowFingerprint]]:
    """Apply every unit as a DAG run's apply_table does (entries and drift guard from the
    plan); returns the fingerprints the units recorded and each table's as scanned afterwards."""
    left: dict[str, RowFingerprint | None] = {}
    with open_archive(path) as reader:
        plan = prepare(reader, target)
        source = {
            e.name: e.fingerprint for e in reader.manifest.tables if e.fingerprint is not None
        }
        for u in plan.units:
            result: UnitResult = apply_unit(
                reader,
                target,
                u,
                entries=unit_entries(reader, u),
                checked=plan.checked,
                expected=plan.unit_fingerprints(u),
            )
            left.update(result.fingerprints)
    fresh: dict[str, RowFingerprint] = {}
    with psycopg.connect(target) as conn, conn.cursor() as cur:
        for name in left:
            fp = current_fingerprint(cur, "public", name)
            assert fp is not None
            fresh[name] = fp
    assert source  # the file has the source's fingerprints
    return left, fresh


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tables whose fingerprint a unit took by scanning them."""
    names: list[str] = []
    scan: Callable[..., Any] = apply_module.fingerprints_of

    def spy(cur: Any, tables: Any) -> Any:
        tables = list(tables)
        names.extend(name for _schema, name in tables)
        return scan(cur, tables)

    monkeypatch.setattr(apply_module, "fingerprints_of", spy)
    return names


def test_a_table_loaded_whole_records_the_sources_fingerprint_without_a_scan(
    source: str, target: str, tmp_path: Path, scanned: list[str]
) -> None:
    sql(source, ITEMS)
    path = tmp_path / "m.zip"
    make_file(source, path, **OVERWRITE_ALL)
    left, fresh = _apply_all(path, target, scanned)
    assert set(left) == {"items", "fees"}
    assert left == fresh  # what a scan of the target gives, exactly
    assert "items" not in scanned  # ... without one
    assert "fees" in scanned  # money prints by lc_monetary: not shown equal, scanned


@pytest.mark.parametrize("case", ["extra target column kept", "upsert", "merge"])
def test_other_loads_still_scan(
    source: str, target: str, tmp_path: Path, scanned: list[str], case: str
) -> None:
    sql(source, ITEMS)
    rules = OVERWRITE_ALL
    if case == "extra target column kept":
        sql(target, ITEMS.split("CREATE TABLE fees")[0].split("INSERT")[0])
        sql(target, "ALTER TABLE items ADD COLUMN extra text DEFAULT 'kept'")
    elif case == "upsert":
        rules = {"rules": {"user": {"default": "upsert"}}}
    else:  # overwrite into a target that has rows: a merge
        sql(target, ITEMS)
        sql(
            target,
            "UPDATE items SET name = 'changed' WHERE id % 10 = 0; DELETE FROM items WHERE id > 450",
        )
    path = tmp_path / "m.zip"
    make_file(source, path, **rules)
    left, fresh = _apply_all(path, target, scanned)
    assert left["items"] == fresh["items"]
    assert "items" in scanned
    if case == "extra target column kept":
        # the scan mattered: the extra column's values are in the target's fingerprint
        with open_archive(path) as reader:
            entry = next(e for e in reader.manifest.tables if e.name == "items")
        assert entry.fingerprint is not None
        assert left["items"] != entry.fingerprint


@pytest.mark.parametrize("encoding", ["MULE_INTERNAL", None])
def test_a_fingerprint_taken_in_another_or_an_unknown_encoding_is_not_reused(
    source: str,
    target: str,
    tmp_path: Path,
    scanned: list[str],
    monkeypatch: pytest.MonkeyPatch,
    encoding: str | None,
) -> None:
    """The sums hash the row text's bytes: a source in another server encoding (or a file from
    before it recorded its encoding) gets its table scanned, never the file's fingerprint."""
    sql(source, ITEMS)
    path = tmp_path / "m.zip"
    make_file(source, path, **OVERWRITE_ALL)
    with open_archive(path) as reader:
        recorded = reader.manifest.source.server_encoding
    with psycopg.connect(source) as conn:
        assert recorded == conn.execute("SHOW server_encoding").fetchone()[0]  # type: ignore[index]
    real = apply_module.unit_entries

    def other_encoding(reader: Any, unit: Any) -> Any:
        return {
            name: entry.model_copy(
                update={"fingerprint": entry.fingerprint.model_copy(update={"encoding": encoding})}
            )
            if entry.fingerprint
            else entry
            for name, entry in real(reader, unit).items()
        }

    monkeypatch.setattr(sys.modules[__name__], "unit_entries", other_encoding)
    left, fresh = _apply_all(path, target, scanned)
    assert left["items"] == fresh["items"]
    assert "items" in scanned
