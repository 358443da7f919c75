"""One table, every rule: overwrite, upsert, insert-ignore, schema-only, skip, and
independent rules that override the default.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.rules_tools import (
    DRIFT_BASE,
    DRIFT_SOURCE_CHANGES,
    DRIFT_TARGET_CHANGES,
    assert_second_run_changes_nothing,
    columns,
    creates_table,
    tables,
    user_rule,
)
from tests.pgtools import make_file, migrate, rows, scalar, sql, table_text

pytestmark = pytest.mark.postgres


# (id, name, qty, note, extra) after each rule
UNTOUCHED = [(1, "a", 1, None, "kept-1"), (2, "b", 2, None, "kept-2")]


SOURCE_ROWS = [
    (1, "a", 1, None, "kept-1"),
    (2, "b2", 20, "changed", "kept-2"),
    (3, "c", 3, "new", "tgt"),
]


TARGET_ONLY = [(4, "d", 4, None, "kept-4"), (5, "e", 5, None, "tgt")]


EXPECTED = {
    # rule: (rows, (inserted, updated, deleted, unchanged))
    "overwrite": (SOURCE_ROWS, (1, 1, 2, 1)),
    "upsert": (SOURCE_ROWS + TARGET_ONLY, (1, 1, 0, 1)),
    "insert-ignore": (UNTOUCHED + [(3, "c", 3, "new", "tgt")] + TARGET_ONLY, (1, 0, 0, 2)),
    "schema-only": (UNTOUCHED + TARGET_ONLY, (0, 0, 0, 0)),
}


@pytest.fixture
def drifted(source: str, target: str) -> tuple[str, str]:
    sql(source, DRIFT_BASE + DRIFT_SOURCE_CHANGES)
    sql(target, DRIFT_BASE + DRIFT_TARGET_CHANGES)
    return source, target


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_rule_syncs_structure_and_writes_rows_as_documented(
    drifted: tuple[str, str], tmp_path: Path, rule: str
) -> None:
    source, target = drifted
    expected_rows, expected_counts = EXPECTED[rule]

    result = migrate(source, target, tmp_path / "m.zip", create=user_rule(rule))

    # structure: type changes and the new column arrive; the target's own column is kept
    assert columns(target, "items") == {
        "id": "integer",
        "name": "character varying(255)",
        "qty": "bigint",
        "extra": "text",
        "note": "text",
    }
    items = result["items"]
    assert items.rule == rule
    assert items.status == "applied"
    ddl = "\n".join(items.ddl)
    assert "ADD COLUMN note TEXT" in ddl
    assert "ALTER COLUMN name TYPE VARCHAR(255)" in ddl
    assert "ALTER COLUMN qty TYPE BIGINT" in ddl
    assert "DROP" not in ddl
    assert any("drop column extra" in w for w in items.warnings)

    # rows
    assert rows(target, "SELECT id, name, qty, note, extra FROM items ORDER BY id") == expected_rows
    assert (items.inserted, items.updated, items.deleted, items.unchanged) == expected_counts

    # the new table: created, with the source's rows unless the rule moves no data
    fresh = result["fresh"]
    assert fresh.status == "applied"
    assert creates_table(fresh.ddl[0], "fresh")
    if rule == "overwrite":  # loaded by COPY into the new table, its key built after
        assert "PRIMARY KEY" not in fresh.ddl[0]
        assert fresh.ddl[1:] == ("ALTER TABLE fresh ADD CONSTRAINT fresh_pkey PRIMARY KEY (id)",)
    else:  # created with its key (upsert and insert-ignore load through ON CONFLICT)
        assert len(fresh.ddl) == 1 and "PRIMARY KEY" in fresh.ddl[0]
    assert columns(target, "fresh") == {"id": "integer", "v": "text"}
    fresh_rows = [] if rule == "schema-only" else [(1, "x"), (2, "y")]
    assert rows(target, "SELECT id, v FROM fresh ORDER BY id") == fresh_rows
    assert fresh.inserted == len(fresh_rows)
    assert (fresh.updated, fresh.deleted) == (0, 0)


def test_skip_changes_nothing_not_even_structure(drifted: tuple[str, str], tmp_path: Path) -> None:
    source, target = drifted
    before = table_text(target, "items")

    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("skip"))

    assert {name: r.status for name, r in result.items()} == {
        "items": "skipped",
        "fresh": "skipped",
    }
    for r in result.values():
        assert r.ddl == () and (r.inserted, r.updated, r.deleted, r.unchanged) == (0, 0, 0, 0)
    assert tables(target) == ["items"]  # "fresh" was not created
    assert columns(target, "items") == {
        "id": "integer",
        "name": "character varying(50)",
        "qty": "integer",
        "extra": "text",
    }
    assert table_text(target, "items") == before


def test_skip_file_carries_no_data(drifted: tuple[str, str], tmp_path: Path) -> None:
    source, _target = drifted
    manifest = make_file(source, tmp_path / "m.zip", **user_rule("skip"))
    assert manifest["units"] == []
    assert manifest["members"] == {}
    assert all(t["data"] is None for t in manifest["tables"])


def test_independent_rules_override_the_default(drifted: tuple[str, str], tmp_path: Path) -> None:
    source, target = drifted

    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("skip", items="upsert"))

    assert result["items"].rule == "upsert"
    assert result["fresh"].status == "skipped"
    assert tables(target) == ["items"]
    assert (
        rows(target, "SELECT id, name, qty, note, extra FROM items ORDER BY id")
        == SOURCE_ROWS + TARGET_ONLY
    )


def test_schema_only_new_table_gets_structure_but_no_rows(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        "CREATE TABLE t (id bigint PRIMARY KEY, v jsonb DEFAULT '{\"a\":1}'::jsonb);"
        "CREATE INDEX t_v ON t USING gin (v);"
        "INSERT INTO t VALUES (1, '{}');",
    )
    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("schema-only"))
    assert result["t"].status == "applied"
    assert scalar(target, "SELECT count(*) FROM t") == 0
    assert columns(target, "t") == {"id": "bigint", "v": "jsonb"}
    assert (
        scalar(
            target,
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 't' AND column_name = 'v'",
        )
        == "'{\"a\": 1}'::jsonb"
    )
    assert scalar(target, "SELECT indexdef FROM pg_indexes WHERE indexname = 't_v'").endswith(
        "USING gin (v)"
    )
    assert_second_run_changes_nothing(
        source, target, tmp_path / "m2.zip", create=user_rule("schema-only")
    )
