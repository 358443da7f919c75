"""Each rule against real PostgreSQL: the target's final state and the per-table results.

Every test builds its own small source and target databases (``source`` / ``target``
fixtures), migrates with the ``generic`` profile (every table is "user") and asserts on the
target's rows and structure, and on the returned counts and DDL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration_manager.archive import open_archive
from migration_manager.errors import ApplyError, PlanError
from migration_manager.execute import prepare
from tests.pgtools import apply_file, make_file, migrate, rows, scalar, sql, table_text

pytestmark = pytest.mark.postgres


def user_rule(rule: str, **independent: str) -> dict[str, Any]:
    """``create`` kwargs for :func:`migrate`: a default rule for user tables (+ independent ones)."""
    return {"rules": {"user": {"default": rule, "independent": independent}}}


def columns(dsn: str, table: str) -> dict[str, str]:
    """Column name -> ``format_type`` text, in the table's column order."""
    return dict(
        rows(
            dsn,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = format('public.%%I', %s::text)::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (table,),
        )
    )


def creates_table(statement: str, name: str) -> bool:
    """Whether ``statement`` is the CREATE TABLE of ``name`` (schema-qualified or not)."""
    quoted = f'"{name}"' if name != name.lower() else name
    return re.match(rf"CREATE TABLE (public\.)?{re.escape(quoted)} \(", statement) is not None


def tables(dsn: str) -> list[str]:
    return [
        r[0]
        for r in rows(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    ]


def assert_second_run_changes_nothing(source: str, target: str, path: Path, **kw: Any) -> None:
    """Migrating the same source again: every table unchanged, no DDL, no rows written."""
    names = tables(target)
    before = {t: table_text(target, t) for t in names}
    again = migrate(source, target, path, **kw)
    assert again, "the second run returned no results"
    for name, r in again.items():
        assert r.status == ("skipped" if r.rule == "skip" else "unchanged"), (name, r)
        assert r.ddl == (), (name, r.ddl)
        assert (r.inserted, r.updated, r.deleted) == (0, 0, 0), (name, r)
    assert tables(target) == names
    assert {t: table_text(target, t) for t in names} == before


# --------------------------------------------------------------------------- one table, every rule

# Both sides start from the same table; then the source and the target drift apart:
#   source: name varchar(50) -> varchar(255), qty integer -> bigint, new column "note",
#           row 2 changed, row 3 new, row 4 deleted, and a new table "fresh"
#   target: a column only it has ("extra", default 'tgt'), and a row only it has (5)
BASE = """
CREATE TABLE items (id integer PRIMARY KEY, name varchar(50) NOT NULL, qty integer);
INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2), (4, 'd', 4);
"""
SOURCE_CHANGES = """
ALTER TABLE items ALTER name TYPE varchar(255), ALTER qty TYPE bigint, ADD COLUMN note text;
UPDATE items SET name = 'b2', qty = 20, note = 'changed' WHERE id = 2;
INSERT INTO items VALUES (3, 'c', 3, 'new');
DELETE FROM items WHERE id = 4;
CREATE TABLE fresh (id integer PRIMARY KEY, v text);
INSERT INTO fresh VALUES (1, 'x'), (2, 'y');
"""
TARGET_CHANGES = """
ALTER TABLE items ADD COLUMN extra text DEFAULT 'tgt';
UPDATE items SET extra = 'kept-' || id;
INSERT INTO items (id, name, qty) VALUES (5, 'e', 5);
"""

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
    sql(source, BASE + SOURCE_CHANGES)
    sql(target, BASE + TARGET_CHANGES)
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


# --------------------------------------------------------------------------- NocoBase-shaped tables

LARGE = os.urandom(3 * 1024 * 1024 // 2).hex()  # 3 MB of text in one value

NOCOBASE_SHAPED = """
CREATE TABLE "uiSchemas" (
    "x-uid" varchar(255) PRIMARY KEY,
    name varchar(255),
    schema json,
    "createdAt" timestamptz
);
CREATE TABLE "rolesUsers" (
    "roleName" varchar(255) NOT NULL,
    "userId" bigint NOT NULL,
    "default" boolean DEFAULT false,
    PRIMARY KEY ("roleName", "userId")
);
CREATE TABLE "applicationPlugins" (
    id serial PRIMARY KEY,
    name varchar(255) UNIQUE,
    enabled boolean,
    options json DEFAULT '{}'::json,
    "createdAt" timestamp(3) with time zone DEFAULT now()
);
CREATE TABLE "byDefault" (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, title text);
CREATE TABLE "always" (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text);
CREATE TABLE "main_desktopRoutes_path" ("nodePk" bigint, path text, "rootPk" bigint);
CREATE INDEX "main_desktopRoutes_path_path" ON "main_desktopRoutes_path" (path);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    data jsonb,
    tags text[],
    nums integer[],
    price numeric(10, 2),
    ratio double precision,
    token uuid,
    wait interval,
    "createdAt" timestamp(3) with time zone,
    note text
);
"""


def _fill(dsn: str, large: str) -> None:
    sql(
        dsn,
        """
        INSERT INTO "uiSchemas" VALUES
          ('ab-c1', 'root', '{"type": "void", "x-component": "Grid", "properties": {}}', '2024-01-02 03:04:05+00'),
          ('x-9z_Q', '页面 🚀', '{"title": "Café ünïcödé 表单 😀", "n": null}', NULL),
          ('no-schema', NULL, NULL, NULL);
        INSERT INTO "rolesUsers" VALUES ('admin', 1, true), ('member', 1, false), ('member', 2, NULL);
        INSERT INTO "applicationPlugins" (name, enabled, options) VALUES
          ('acl', true, '{"a": [1, 2]}'), ('users', true, DEFAULT), ('audit', false, NULL);
        INSERT INTO "byDefault" (title) VALUES ('one'), ('two');
        INSERT INTO "always" (title) VALUES ('uno'), ('dos'), ('tres');
        INSERT INTO "main_desktopRoutes_path" VALUES (1, '/1', 1), (2, '/1/2', 1), (2, '/1/2', 1), (NULL, NULL, NULL);
        """,
    )
    sql(
        dsn,
        """
        INSERT INTO orders VALUES
          (1, '{"k": "v", "nested": {"list": [1, 2.5, "三"]}}', '{a,"b c",NULL,"d,e"}', '{1,2,3}',
           12.34, 0.1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:03:04',
           '2024-05-06 07:08:09.123+02', %s),
          (2, NULL, '{}', NULL, NULL, 'NaN', NULL, NULL, NULL, 'emoji 👩‍💻 and CJK 漢字かなカナ한글'),
          (3, '[]', NULL, '{-1}', -0.01, -1e300, NULL, '-5 minutes', 'infinity', '')
        """,
        (large,),
    )


def test_nocobase_shaped_tables_overwrite_then_rerun_changes_nothing(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, NOCOBASE_SHAPED)
    _fill(source, LARGE)
    names = tables(source)

    # 1. into an empty target: every table is created and loaded
    first = migrate(source, target, tmp_path / "1.zip", create=user_rule("overwrite"))

    assert set(first) == set(names)
    for name in names:
        assert first[name].status == "applied", name
        assert any(creates_table(stmt, name) for stmt in first[name].ddl), name
        assert first[name].inserted == scalar(source, f'SELECT count(*) FROM "{name}"'), name
        assert columns(target, name) == columns(source, name), name
        assert table_text(target, name) == table_text(source, name), name
    assert tables(target) == names
    assert scalar(target, "SELECT length(note) FROM orders WHERE id = 1") == len(LARGE)
    assert scalar(target, "SELECT note FROM orders WHERE id = 1") == LARGE
    assert rows(target, 'SELECT name FROM "uiSchemas" WHERE "x-uid" = \'x-9z_Q\'') == [("页面 🚀",)]
    assert rows(target, "SELECT tags, nums FROM orders WHERE id = 1") == [
        (["a", "b c", None, "d,e"], [1, 2, 3])
    ]
    assert scalar(target, 'SELECT count(*) FROM "main_desktopRoutes_path"') == 4
    # identity columns stay identity columns, of the same kind
    assert rows(
        target,
        "SELECT table_name, is_identity, identity_generation FROM information_schema.columns "
        "WHERE column_name = 'id' AND table_name IN ('byDefault', 'always') ORDER BY 1",
    ) == [("always", "YES", "ALWAYS"), ("byDefault", "YES", "BY DEFAULT")]

    # 2. the same source again: nothing to do, contents unchanged
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite")
    )

    # 3. the source changes: rows updated, inserted, deleted in every table; the target follows
    sql(
        source,
        """
        UPDATE "uiSchemas" SET schema = '{"type": "object"}', name = NULL WHERE "x-uid" = 'ab-c1';
        INSERT INTO "uiSchemas" VALUES ('new-uid', '新しい', '[1]', now());
        DELETE FROM "uiSchemas" WHERE "x-uid" = 'no-schema';
        DELETE FROM "rolesUsers" WHERE "roleName" = 'member' AND "userId" = 2;
        UPDATE "rolesUsers" SET "default" = NULL WHERE "roleName" = 'admin';
        INSERT INTO "rolesUsers" VALUES ('root', 1, true);
        UPDATE "applicationPlugins" SET enabled = NOT enabled WHERE name = 'audit';
        INSERT INTO "applicationPlugins" (name) VALUES ('workflow');
        DELETE FROM "applicationPlugins" WHERE name = 'users';
        INSERT INTO "always" (title) VALUES ('cuatro');
        DELETE FROM "always" WHERE title = 'uno';
        UPDATE "byDefault" SET title = 'TWO' WHERE id = 2;
        DELETE FROM "main_desktopRoutes_path" WHERE path IS NULL;
        UPDATE orders SET tags = array_append(tags, '🙂'), note = 'short now' WHERE id = 1;
        UPDATE orders SET data = '{"x": 1}' WHERE id = 3;
        INSERT INTO orders (id, note) VALUES (4, repeat('ä', 1000));
        """,
    )
    third = migrate(source, target, tmp_path / "3.zip", create=user_rule("overwrite"))
    for name in names:
        assert table_text(target, name) == table_text(source, name), name
        assert third[name].ddl == (), name
    counts = {n: (r.inserted, r.updated, r.deleted, r.unchanged) for n, r in third.items()}
    assert counts["uiSchemas"] == (1, 1, 1, 1)
    assert counts["rolesUsers"] == (1, 1, 1, 1)
    assert counts["applicationPlugins"] == (1, 1, 1, 1)
    assert counts["always"] == (1, 0, 1, 2)
    assert counts["byDefault"] == (0, 1, 0, 1)
    assert counts["orders"] == (1, 2, 0, 1)
    # a key-less table is replaced as a whole when it differs
    assert counts["main_desktopRoutes_path"] == (3, 0, 4, 0)

    # 4. and again: nothing to do
    assert_second_run_changes_nothing(
        source, target, tmp_path / "4.zip", create=user_rule("overwrite")
    )

    # the target can keep inserting rows after the load: identities and serials moved on
    for name in ("applicationPlugins", "byDefault", "always"):
        column = "name" if name == "applicationPlugins" else "title"
        new_id = scalar(target, f'INSERT INTO "{name}" ("{column}") VALUES (\'z\') RETURNING id')
        assert new_id > scalar(source, f'SELECT max(id) FROM "{name}"'), name


KEYED = ("uiSchemas", "rolesUsers", "orders")  # string key with a hyphen, composite, bigint


@pytest.mark.parametrize("rule", ["upsert", "insert-ignore"])
def test_nocobase_shaped_keyed_tables_upsert_and_insert_ignore(
    source: str, target: str, tmp_path: Path, rule: str
) -> None:
    sql(source, NOCOBASE_SHAPED)
    _fill(source, "large " * 100_000)
    sql(target, NOCOBASE_SHAPED)
    _fill(target, "old large value")
    # the target drifts: a changed row and a row of its own in each keyed table
    sql(
        target,
        """
        UPDATE "uiSchemas" SET schema = '{"edited": "in prod"}' WHERE "x-uid" = 'ab-c1';
        INSERT INTO "uiSchemas" ("x-uid", name) VALUES ('prod-only', 'p');
        UPDATE "rolesUsers" SET "default" = false WHERE "roleName" = 'admin';
        INSERT INTO "rolesUsers" VALUES ('prod', 9, true);
        INSERT INTO orders (id, note) VALUES (99, 'prod order');
        """,
    )
    sql(source, "INSERT INTO orders (id, tags) VALUES (5, '{新}')")
    rules = {"user": {"default": "skip", "independent": dict.fromkeys(KEYED, rule)}}
    target_before = {t: set(table_text(target, t)) for t in KEYED}

    result = migrate(source, target, tmp_path / "1.zip", create={"rules": rules})

    for name in KEYED:
        after = set(table_text(target, name))
        source_rows = set(table_text(source, name))
        if rule == "upsert":
            # every source row as in the source; the target's own rows kept
            assert source_rows <= after, name
            assert after - source_rows <= target_before[name], name
        else:
            # existing rows untouched, only new keys inserted
            assert target_before[name] <= after, name
            assert after - target_before[name] <= source_rows, name
        assert result[name].deleted == 0
    counts = {n: (result[n].inserted, result[n].updated, result[n].unchanged) for n in KEYED}
    if rule == "upsert":
        # orders: 1 differs (the large note), 5 is new; rolesUsers: admin differs
        assert counts == {"uiSchemas": (0, 1, 2), "rolesUsers": (0, 1, 2), "orders": (1, 1, 2)}
    else:
        assert counts == {"uiSchemas": (0, 0, 3), "rolesUsers": (0, 0, 3), "orders": (1, 0, 3)}
    assert scalar(target, 'SELECT count(*) FROM "rolesUsers" WHERE "roleName" = \'prod\'') == 1
    assert scalar(target, "SELECT note FROM orders WHERE id = 99") == "prod order"
    for name in set(tables(source)) - set(KEYED):
        assert result[name].status == "skipped"

    assert_second_run_changes_nothing(source, target, tmp_path / "2.zip", create={"rules": rules})


def test_generated_columns_are_computed_by_the_target(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        "CREATE TABLE t (id integer PRIMARY KEY, price numeric(10,2), qty integer,"
        " total numeric GENERATED ALWAYS AS (price * qty) STORED);"
        "INSERT INTO t (id, price, qty) VALUES (1, 2.50, 4), (2, NULL, 1);",
    )
    result = migrate(source, target, tmp_path / "1.zip", create=user_rule("overwrite"))
    assert result["t"].inserted == 2
    assert rows(target, "SELECT id, total FROM t ORDER BY id") == [
        (1, Decimal("10.0000")),
        (2, None),
    ]
    assert (
        scalar(
            target,
            "SELECT is_generated FROM information_schema.columns "
            "WHERE table_name = 't' AND column_name = 'total'",
        )
        == "ALWAYS"
    )
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite")
    )


def test_unchanged_keyless_table_is_left_alone(source: str, target: str, tmp_path: Path) -> None:
    ddl = "CREATE TABLE paths (a bigint, b text);"
    sql(source, ddl + "INSERT INTO paths VALUES (1, 'x'), (1, 'x'), (2, NULL);")
    sql(target, ddl + "INSERT INTO paths VALUES (2, NULL), (1, 'x'), (1, 'x');")
    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))
    r = result["paths"]
    assert (r.status, r.inserted, r.deleted, r.unchanged) == ("unchanged", 0, 0, 3)
    assert table_text(target, "paths") == table_text(source, "paths")


def test_keyless_table_duplicates_count(source: str, target: str, tmp_path: Path) -> None:
    """Same distinct rows, other multiplicities: the target must end with the source's multiset."""
    ddl = "CREATE TABLE paths (a bigint, b text);"
    sql(source, ddl + "INSERT INTO paths VALUES (1, 'x'), (1, 'x'), (2, NULL);")
    sql(target, ddl + "INSERT INTO paths VALUES (1, 'x'), (2, NULL), (2, NULL);")
    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))
    assert table_text(target, "paths") == table_text(source, "paths")
    assert (result["paths"].inserted, result["paths"].deleted) == (3, 3)


# PostgreSQL types as format_type() prints them (and a value of each): each must arrive as is.
TYPES = {
    "smallint": "-32768",
    "integer": "7",
    "bigint": "9007199254740993",
    "numeric": "1.000000000000000000001",
    "numeric(10,2)": "12.5",
    "numeric(10,0)": "10",
    "real": "1.5",
    "double precision": "-0.1",
    "money": "12.34",
    "text": "x",
    "character varying": "v",
    "character varying(50)": "v50",
    "character(1)": "c",
    "character(3)": "ab",
    "bytea": "\\x00ff",
    "boolean": "false",
    "date": "2024-02-29",
    "time without time zone": "23:59:59.999999",
    "time(3) without time zone": "12:00:00.123",
    "time with time zone": "01:02:03+05:30",
    "timestamp without time zone": "2024-01-01 00:00:00",
    "timestamp(0) without time zone": "2024-01-01 00:00:01",
    "timestamp with time zone": "infinity",
    "timestamp(3) with time zone": "2024-05-06 07:08:09.123+02",
    "interval": "1 year 2 mons",
    "interval(2)": "00:00:01.25",
    "interval day to second(3)": "3 days 00:00:00.5",
    "interval year to month": "2 years",
    "json": '{"a": [1, 2], "b": {"c": null}}',
    "jsonb": '{"a": 1}',
    "uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "xml": "<a>1</a>",
    "inet": "192.168.0.1/24",
    "cidr": "10.0.0.0/8",
    "macaddr": "08:00:2b:01:02:03",
    "bit(3)": "101",
    "bit varying(5)": "11",
    "bit varying": "0",
    "tsvector": "a fat cat",
    "int4range": "[1,5)",
    "tstzrange": "[2024-01-01 00:00+00,)",
    "text[]": '{a,NULL,"b c"}',
    "integer[]": "{{1,2},{3,4}}",
    "character varying(20)[]": "{x}",
    "jsonb[]": '{"{\\"a\\": 1}"}',
    "timestamp with time zone[]": "{}",
    "numeric(5,1)[]": "{1.5,NULL}",
}


def test_common_types_arrive_as_the_same_types(source: str, target: str, tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(len(TYPES))]
    cols = ", ".join(f"{n} {t}" for n, t in zip(names, TYPES, strict=True))
    sql(source, f"CREATE TABLE t (id integer PRIMARY KEY, {cols})")
    placeholders = ", ".join(["%s"] * len(TYPES))
    sql(
        source,
        f"INSERT INTO t (id, {', '.join(names)}) VALUES (1, {placeholders})",
        list(TYPES.values()),
    )
    sql(source, "INSERT INTO t (id) VALUES (2)")  # and NULL in every column
    assert columns(source, "t") == {"id": "integer", **dict(zip(names, TYPES, strict=True))}

    result = migrate(source, target, tmp_path / "1.zip", create=user_rule("overwrite"))

    assert result["t"].inserted == 2
    assert columns(target, "t") == columns(source, "t")
    assert table_text(target, "t") == table_text(source, "t")
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite")
    )


# --------------------------------------------------------------------------- sequences


def test_overwrite_of_serial_table_moves_the_sequence_past_ids(
    source: str, target: str, tmp_path: Path
) -> None:
    ddl = 'CREATE TABLE "applicationPlugins" (id serial PRIMARY KEY, name text);'
    sql(
        source,
        ddl
        + "INSERT INTO \"applicationPlugins\" (name) SELECT 'p' || g FROM generate_series(1, 7) g;",
    )
    # the source's sequence is ahead of its largest id (rows 6, 7 deleted): 7 > max(id) = 5
    sql(source, 'DELETE FROM "applicationPlugins" WHERE id > 5;')
    sql(target, ddl + "INSERT INTO \"applicationPlugins\" (name) VALUES ('old1'), ('old2');")

    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))

    r = result["applicationPlugins"]
    assert (r.inserted, r.updated, r.deleted, r.unchanged) == (3, 2, 0, 0)
    assert any("setval" in s for s in r.data_sql)
    assert table_text(target, "applicationPlugins") == table_text(source, "applicationPlugins")
    next_id = scalar(
        target, "SELECT nextval(pg_get_serial_sequence('\"applicationPlugins\"', 'id'))"
    )
    assert next_id > 5  # past the largest id
    assert next_id > 7  # and past the source's last value: ids it handed out are not reused


def test_new_serial_table_gets_its_sequence_owned_and_advanced(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        "CREATE TABLE s (id serial PRIMARY KEY, v text);"
        "INSERT INTO s (v) SELECT 'v' || g FROM generate_series(1, 4) g;",
    )
    migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))
    assert scalar(target, "SELECT pg_get_serial_sequence('s', 'id')") == "public.s_id_seq"
    assert scalar(target, "INSERT INTO s (v) VALUES ('next') RETURNING id") == 5


def test_sequence_ahead_in_the_target_is_not_moved_back(
    source: str, target: str, tmp_path: Path
) -> None:
    ddl = "CREATE TABLE s (id serial PRIMARY KEY, v text);"
    sql(source, ddl + "INSERT INTO s (v) VALUES ('a'), ('b');")
    sql(target, ddl + "SELECT setval('s_id_seq', 100);")
    migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))
    assert scalar(target, "SELECT nextval('s_id_seq')") == 101


def test_schema_only_new_serial_table_starts_its_sequence_afresh(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, "CREATE TABLE s (id serial PRIMARY KEY, v text); INSERT INTO s (v) VALUES ('a');")
    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("schema-only"))
    assert result["s"].ddl[0].startswith("CREATE SEQUENCE public.s_id_seq ")
    assert scalar(target, "SELECT count(*) FROM s") == 0
    assert scalar(target, "INSERT INTO s (v) VALUES ('z') RETURNING id") == 1


# --------------------------------------------------------------------------- foreign keys

FK_TABLES = """
CREATE TABLE parent (id integer PRIMARY KEY, name text);
CREATE TABLE child (
    id integer PRIMARY KEY,
    parent_id integer NOT NULL REFERENCES parent (id),
    v text
);
"""
FK_BASE = (
    FK_TABLES
    + """
INSERT INTO parent VALUES (1, 'p1'), (2, 'p2'), (3, 'p3');
INSERT INTO child VALUES (10, 1, 'c10'), (11, 2, 'c11'), (12, 3, 'c12');
"""
)


def test_overwrite_of_tables_linked_by_a_foreign_key(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, FK_BASE)
    sql(target, FK_BASE)
    # source: parent 3 and its child deleted, parent 4 and a child of it added,
    # child 11 moved to parent 4 (its old parent 2 stays)
    sql(
        source,
        "DELETE FROM child WHERE id = 12; DELETE FROM parent WHERE id = 3;"
        "INSERT INTO parent VALUES (4, 'p4'); INSERT INTO child VALUES (13, 4, 'c13');"
        "UPDATE child SET parent_id = 4 WHERE id = 11;",
    )
    # target: a parent and a child of its own, which the overwrite deletes
    sql(target, "INSERT INTO parent VALUES (5, 'p5'); INSERT INTO child VALUES (14, 5, 'c14');")

    manifest = make_file(source, tmp_path / "m.zip", **user_rule("overwrite"))
    assert [u["tables"] for u in manifest["units"]] == [["parent", "child"]]
    result = apply_file(tmp_path / "m.zip", target)

    assert rows(target, "SELECT id, name FROM parent ORDER BY id") == [
        (1, "p1"),
        (2, "p2"),
        (4, "p4"),
    ]
    assert rows(target, "SELECT id, parent_id, v FROM child ORDER BY id") == [
        (10, 1, "c10"),
        (11, 4, "c11"),
        (13, 4, "c13"),
    ]
    p, c = result["parent"], result["child"]
    assert (p.inserted, p.updated, p.deleted, p.unchanged) == (1, 0, 2, 2)
    assert (c.inserted, c.updated, c.deleted, c.unchanged) == (1, 1, 2, 1)


def test_new_tables_linked_by_a_foreign_key_are_created_parent_first(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, FK_BASE)
    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))
    assert (result["parent"].inserted, result["child"].inserted) == (3, 3)
    assert table_text(target, "parent") == table_text(source, "parent")
    assert table_text(target, "child") == table_text(source, "child")
    assert (
        scalar(
            target,
            "SELECT confrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
            "AND conrelid = 'child'::regclass",
        )
        == "parent"
    )
    assert_second_run_changes_nothing(
        source, target, tmp_path / "m2.zip", create=user_rule("overwrite")
    )


def test_a_failing_unit_rolls_back_all_of_its_tables(
    source: str, target: str, tmp_path: Path
) -> None:
    """The child's load fails after the parent was written: neither table keeps any change."""
    sql(
        source,
        FK_BASE + "INSERT INTO parent VALUES (6, 'p6'); INSERT INTO child VALUES (16, 6, 'bad');",
    )
    # a check constraint only the target has (Alembic does not compare check constraints)
    sql(target, FK_BASE + "ALTER TABLE child ADD CONSTRAINT child_v_ok CHECK (v <> 'bad');")
    make_file(source, tmp_path / "m.zip", **user_rule("overwrite"))
    before = {t: table_text(target, t) for t in ("parent", "child")}

    with pytest.raises(
        ApplyError, match=r"child: .*child_v_ok.*the unit \(parent, child\) was rolled back"
    ):
        apply_file(tmp_path / "m.zip", target)

    assert {t: table_text(target, t) for t in ("parent", "child")} == before


def test_deleting_a_parent_that_a_skipped_table_references_fails_cleanly(
    source: str, target: str, tmp_path: Path
) -> None:
    """A child row the migration does not touch still points at a parent the overwrite deletes."""
    sql(source, FK_TABLES + "INSERT INTO parent VALUES (1, 'new');")
    sql(
        target,
        FK_TABLES + "INSERT INTO parent VALUES (1, 'old'), (2, 'other');"
        "INSERT INTO child VALUES (20, 2, 'still points at 2');",
    )
    make_file(source, tmp_path / "m.zip", **user_rule("overwrite", child="skip"))
    before = {t: table_text(target, t) for t in ("parent", "child")}

    with pytest.raises(ApplyError, match="parent: .*foreign key.*the target is unchanged"):
        apply_file(tmp_path / "m.zip", target)

    assert {t: table_text(target, t) for t in ("parent", "child")} == before


# --------------------------------------------------------------------------- dropping


def test_target_only_column_is_kept_by_default_and_dropped_with_allow_drop(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, "CREATE TABLE t (id integer PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');")
    sql(
        target,
        "CREATE TABLE t (id integer PRIMARY KEY, v text, local text);"
        "INSERT INTO t VALUES (1, 'a', 'mine'), (2, 'b', 'mine too');",
    )

    kept = migrate(source, target, tmp_path / "1.zip", create=user_rule("overwrite"))
    assert list(columns(target, "t")) == ["id", "v", "local"]
    assert rows(target, "SELECT * FROM t") == [(1, "a", "mine")]
    assert kept["t"].ddl == ()
    assert kept["t"].warnings == ("kept in the target (dropping is off): drop column local",)

    dropped = migrate(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite"), allow_drop=True
    )
    assert list(columns(target, "t")) == ["id", "v"]
    assert rows(target, "SELECT * FROM t") == [(1, "a")]
    assert dropped["t"].status == "applied"
    assert dropped["t"].ddl == ("ALTER TABLE t DROP COLUMN local",)
    assert dropped["t"].warnings == ()
    assert (dropped["t"].inserted, dropped["t"].updated, dropped["t"].deleted) == (0, 0, 0)


def test_schema_only_with_target_only_column_reports_it_and_touches_nothing(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, "CREATE TABLE t (id integer PRIMARY KEY);")
    sql(
        target,
        "CREATE TABLE t (id integer PRIMARY KEY, local text); INSERT INTO t VALUES (1, 'x');",
    )
    result = migrate(source, target, tmp_path / "m.zip", create=user_rule("schema-only"))
    assert result["t"].status == "unchanged"
    assert result["t"].warnings == ("kept: drop column local",)
    assert rows(target, "SELECT * FROM t") == [(1, "x")]


def test_target_only_table_is_never_dropped(source: str, target: str, tmp_path: Path) -> None:
    sql(source, "CREATE TABLE a (id integer PRIMARY KEY);")
    sql(target, "CREATE TABLE mine (id integer PRIMARY KEY); INSERT INTO mine VALUES (1);")
    migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"), allow_drop=True)
    assert tables(target) == ["a", "mine"]
    assert table_text(target, "mine") == ["(1)"]


# --------------------------------------------------------------------------- the file itself


def test_the_file_is_one_snapshot_and_applies_the_same_twice(
    source: str, new_db: Callable[[], str], tmp_path: Path
) -> None:
    """The same file on two targets (staging, then prod) gives the same result."""
    sql(source, BASE + SOURCE_CHANGES)
    path = tmp_path / "m.zip"
    make_file(source, path, **user_rule("overwrite"))
    with open_archive(path) as reader:
        reader.verify()
    a, b = new_db(), new_db()
    apply_file(path, a)
    apply_file(path, b)
    for name in ("items", "fresh"):
        assert table_text(a, name) == table_text(b, name) == table_text(source, name)


def test_overwrite_when_unique_values_swap_between_rows(
    source: str, target: str, tmp_path: Path
) -> None:
    """Two rows exchange a unique value: an UPDATE row by row would trip the constraint midway."""
    for dsn, (a, b) in ((source, ("beta", "alpha")), (target, ("alpha", "beta"))):
        sql(
            dsn,
            f"CREATE TABLE roles (id int PRIMARY KEY, name text UNIQUE, title text);"
            f"INSERT INTO roles VALUES (1, '{a}', 'One'), (2, '{b}', 'Two');",
        )
    results = migrate(
        source, target, tmp_path / "m.zip", create={"rules": {"user": {"default": "overwrite"}}}
    )
    assert table_text(target, "roles") == table_text(source, "roles")
    assert results["roles"].status == "applied"
    again = migrate(
        source, target, tmp_path / "m2.zip", create={"rules": {"user": {"default": "overwrite"}}}
    )
    assert again["roles"].status == "unchanged"


def test_sample_keys_per_kind_are_the_smallest_20_keys_never_rows(
    source: str, target: str, tmp_path: Path
) -> None:
    """Each kind keeps up to 20 primary-key values as text, smallest first, counted by the same
    statement; composite keys print as a row of their columns; keyless tables and other
    columns' values never appear."""
    sql(
        source,
        "CREATE TABLE big (id int PRIMARY KEY, secret text);"
        "INSERT INTO big SELECT g, 'source-secret-' || g FROM generate_series(1, 500) g;"
        "CREATE TABLE pair (a int, b text, v text, PRIMARY KEY (a, b));"
        "INSERT INTO pair VALUES (1, 'x', 'same'), (2, 'y', 'new value'), (3, 'z', 'added');"
        "CREATE TABLE fresh (id text PRIMARY KEY);"
        "INSERT INTO fresh SELECT 'k' || g FROM generate_series(1, 30) g;"
        "CREATE TABLE nokey (v text); INSERT INTO nokey VALUES ('row-value');",
    )
    sql(
        target,
        # big: 1..100 equal, 101..200 differ, 201..500 new, 900..949 target-only
        "CREATE TABLE big (id int PRIMARY KEY, secret text);"
        "INSERT INTO big SELECT g, 'source-secret-' || g FROM generate_series(1, 100) g;"
        "INSERT INTO big SELECT g, 'target-secret-' || g FROM generate_series(101, 200) g;"
        "INSERT INTO big SELECT g, 'gone-' || g FROM generate_series(900, 949) g;"
        "CREATE TABLE pair (a int, b text, v text, PRIMARY KEY (a, b));"
        "INSERT INTO pair VALUES (1, 'x', 'same'), (2, 'y', 'old value'), (4, 'w', 'gone');"
        "CREATE TABLE nokey (v text); INSERT INTO nokey VALUES ('other-value');",
    )
    results = migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))

    big = results["big"]
    assert (big.inserted, big.updated, big.deleted, big.unchanged) == (300, 100, 50, 100)
    assert big.inserted_keys == tuple(str(i) for i in range(201, 221))
    assert big.updated_keys == tuple(str(i) for i in range(101, 121))
    assert big.deleted_keys == tuple(str(i) for i in range(900, 920))
    pair = results["pair"]
    assert (pair.inserted_keys, pair.updated_keys, pair.deleted_keys) == (
        ("(3,z)",),
        ("(2,y)",),
        ("(4,w)",),
    )
    # a new table is loaded with COPY: its keys are read back from the table, text order
    fresh = results["fresh"]
    assert fresh.inserted == 30
    assert fresh.inserted_keys == tuple(sorted(f"k{i}" for i in range(1, 31))[:20])
    nokey = results["nokey"]
    assert (nokey.inserted, nokey.deleted) == (1, 1)
    assert nokey.inserted_keys == nokey.deleted_keys == ()
    keys = repr([(r.inserted_keys, r.updated_keys, r.deleted_keys) for r in results.values()])
    for value in ("secret-", "row-value", "other-value", "gone-", "new value", "same"):
        assert value not in keys, value

    # upsert keeps target-only rows (nothing deleted); insert-ignore only inserts
    sql(target, "DROP TABLE big, pair, fresh, nokey")
    sql(
        target,
        "CREATE TABLE big (id int PRIMARY KEY, secret text);"
        "INSERT INTO big SELECT g, 'changed' FROM generate_series(490, 520) g;",
    )
    up = migrate(source, target, tmp_path / "u.zip", create=user_rule("schema-only", big="upsert"))
    assert up["big"].inserted_keys == tuple(str(i) for i in range(1, 21))
    assert up["big"].updated_keys == tuple(str(i) for i in range(490, 501))
    assert up["big"].deleted_keys == ()


def test_sample_keys_when_unique_values_swap_between_rows(
    source: str, target: str, tmp_path: Path
) -> None:
    """The fallback (delete all, insert all) reports every key deleted and inserted."""
    for dsn, (a, b) in ((source, ("beta", "alpha")), (target, ("alpha", "beta"))):
        sql(
            dsn,
            f"CREATE TABLE roles (id int PRIMARY KEY, name text UNIQUE);"
            f"INSERT INTO roles VALUES (1, '{a}'), (2, '{b}');",
        )
    results = migrate(source, target, tmp_path / "m.zip", create=user_rule("overwrite"))
    assert results["roles"].deleted_keys == ("1", "2")
    assert results["roles"].inserted_keys == ("1", "2")


# --------------------------------------------------------------------------- units at once


def test_units_applied_at_once_end_as_one_after_another(
    source: str, target: str, new_db: Callable[[], str], tmp_path: Path
) -> None:
    """``workers`` applies independent units concurrently (as mapped tasks do): same end state."""
    sql(source, NOCOBASE_SHAPED + FK_BASE)
    _fill(source, "large " * 10_000)
    serial_target = new_db()
    make_file(source, tmp_path / "m.zip", **user_rule("overwrite"))
    with open_archive(tmp_path / "m.zip") as reader:
        assert len(reader.manifest.units) >= 4  # several units to run at once

    at_once = apply_file(tmp_path / "m.zip", target, workers=3)
    serial = apply_file(tmp_path / "m.zip", serial_target, workers=1)

    names = tables(source)
    assert tables(target) == names
    for name in names:
        assert table_text(target, name) == table_text(source, name), name
        assert table_text(serial_target, name) == table_text(source, name), name
        assert (at_once[name].inserted, at_once[name].status) == (
            serial[name].inserted,
            serial[name].status,
        ), name
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite"), workers=3
    )


def test_a_failing_unit_among_units_at_once_raises_and_rolls_back_only_itself(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        FK_BASE + "INSERT INTO parent VALUES (6, 'p6'); INSERT INTO child VALUES (16, 6, 'bad');",
    )
    sql(
        source,
        "CREATE TABLE other (id integer PRIMARY KEY, v text); INSERT INTO other VALUES (1, 'x');",
    )
    sql(target, FK_BASE + "ALTER TABLE child ADD CONSTRAINT child_v_ok CHECK (v <> 'bad');")
    make_file(source, tmp_path / "m.zip", **user_rule("overwrite"))
    before = {t: table_text(target, t) for t in ("parent", "child")}

    with pytest.raises(ApplyError, match=r"child: .*child_v_ok.*rolled back"):
        apply_file(tmp_path / "m.zip", target, workers=2)

    assert {t: table_text(target, t) for t in ("parent", "child")} == before


# --------------------------------------------------------------------------- enums and domains

# an enum (a label with a quote and a percent sign), a domain with a default, NOT NULL and a
# CHECK, and a domain over the enum; columns of each, and arrays of the enum and the domain
ENUM_AND_DOMAIN = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s 50%');
CREATE DOMAIN posint AS integer NOT NULL DEFAULT 1 CONSTRAINT posint_positive CHECK (VALUE > 0);
"""
GOOD_MOOD = "CREATE DOMAIN good_mood AS mood CONSTRAINT good_mood_not_sad CHECK (VALUE <> 'sad');"
FEELINGS = """
CREATE TABLE feelings (
    id integer PRIMARY KEY, m mood DEFAULT 'ok', ms mood[], n posint, g good_mood, ns posint[]
);
INSERT INTO feelings VALUES
    (1, 'happy', '{sad,ok}', 5, 'ok', '{1,2}'),
    (2, NULL, '{}', 1, NULL, NULL),
    (3, 'it''s 50%', '{"it''s 50%",happy,NULL}', 2, 'it''s 50%', '{}');
"""
FEELINGS_SELECT = "SELECT id, m::text, ms::text, n, g::text, ns::text FROM feelings ORDER BY id"


def enum_labels(dsn: str, name: str) -> list[str]:
    return [
        r[0]
        for r in rows(
            dsn,
            "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            "WHERE t.typname = %s ORDER BY e.enumsortorder",
            (name,),
        )
    ]


def type_names(dsn: str) -> list[str]:
    """The enums and domains of the database's public schema."""
    return [
        r[0]
        for r in rows(
            dsn,
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') ORDER BY 1",
        )
    ]


def test_enum_and_domain_columns_create_their_types_in_an_empty_target(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, ENUM_AND_DOMAIN + GOOD_MOOD + FEELINGS)

    manifest = make_file(source, tmp_path / "1.zip", **user_rule("overwrite"))

    (entry,) = manifest["tables"]
    recorded = entry["structure"]["types"]
    # dependencies first: the enum before the domain over it (not in name order)
    assert [(t["name"], t["kind"]) for t in recorded] == [
        ("mood", "enum"),
        ("posint", "domain"),
        ("good_mood", "domain"),
    ]
    assert recorded[0]["labels"] == ["sad", "ok", "happy", "it's 50%"]
    assert {k: recorded[1][k] for k in ("schema", "base_type", "not_null", "default")} == {
        "schema": "public",
        "base_type": "integer",
        "not_null": True,
        "default": "1",
    }
    assert recorded[1]["checks"] == [
        {"name": "posint_positive", "definition": "CHECK ((VALUE > 0))"}
    ]
    assert recorded[2]["base_type"] == "mood"

    result = apply_file(tmp_path / "1.zip", target)

    feelings = result["feelings"]
    assert feelings.ddl[0] == "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'it''s 50%')"
    assert feelings.ddl[1].startswith(
        "CREATE DOMAIN public.posint AS integer DEFAULT 1 NOT NULL CONSTRAINT posint_positive "
    )
    assert feelings.ddl[2].startswith("CREATE DOMAIN public.good_mood AS mood CONSTRAINT ")
    assert creates_table(feelings.ddl[3], "feelings")
    assert feelings.inserted == 3
    assert type_names(target) == ["good_mood", "mood", "posint"]
    assert enum_labels(target, "mood") == enum_labels(source, "mood")
    assert columns(target, "feelings") == columns(source, "feelings")
    assert table_text(target, "feelings") == table_text(source, "feelings")
    assert rows(target, FEELINGS_SELECT) == rows(source, FEELINGS_SELECT)

    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite")
    )

    # the domains' constraints hold in the target
    with pytest.raises(psycopg.errors.CheckViolation, match="posint_positive"):
        sql(target, "INSERT INTO feelings (id, n) VALUES (10, 0)")
    with pytest.raises(psycopg.errors.CheckViolation, match="good_mood_not_sad"):
        sql(target, "INSERT INTO feelings (id, g) VALUES (11, 'sad')")
    sql(target, "INSERT INTO feelings (id) VALUES (12)")  # the domain's default
    assert rows(target, "SELECT n, m::text FROM feelings WHERE id = 12") == [(1, "ok")]


def test_enum_named_with_its_schema_in_the_source_is_the_target_s_type(
    source: str, target: str, tmp_path: Path
) -> None:
    """Without public on the source's search path, format_type() says ``public.mood``; the
    target reflects the same type as ``mood``: not a change, on no run."""
    database = scalar(source, "SELECT current_database()")
    sql(source, f'ALTER DATABASE "{database}" SET search_path = pg_catalog')
    sql(
        source,
        "CREATE TYPE public.mood AS ENUM ('sad', 'ok');"
        "CREATE DOMAIN public.good_mood AS public.mood CHECK (VALUE <> 'sad');"
        "CREATE TABLE public.t (id integer PRIMARY KEY, m public.mood, ms public.mood[],"
        " g public.good_mood);"
        "INSERT INTO public.t VALUES (1, 'ok', '{sad}', 'ok');",
    )
    assert columns(source, "t")["m"] == "public.mood"

    result = migrate(source, target, tmp_path / "1.zip", create=user_rule("overwrite"))

    assert result["t"].ddl[:2] == (
        "CREATE TYPE public.mood AS ENUM ('sad', 'ok')",
        "CREATE DOMAIN public.good_mood AS public.mood CONSTRAINT good_mood_check "
        "CHECK ((VALUE <> 'sad'::public.mood))",
    )
    assert columns(target, "t") == {"id": "integer", "m": "mood", "ms": "mood[]", "g": "good_mood"}
    assert table_text(target, "t") == table_text(source, "t")
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite")
    )
    with open_archive(tmp_path / "2.zip") as reader:
        assert prepare(reader, target).warnings == ()  # the domain is the source's


def test_upsert_into_a_target_that_has_the_table_and_the_enum(
    source: str, target: str, tmp_path: Path
) -> None:
    """The target's types are used as they are (an extra label is fine); a new column of a
    domain the target lacks brings the domain."""
    sql(source, ENUM_AND_DOMAIN + GOOD_MOOD + FEELINGS)
    sql(
        target,
        ENUM_AND_DOMAIN.replace("'it''s 50%')", "'it''s 50%', 'meh')")
        + "CREATE TABLE feelings (id integer PRIMARY KEY, m mood DEFAULT 'ok', ms mood[], n posint,"
        " ns posint[]);"
        "INSERT INTO feelings VALUES (1, 'sad', '{meh}', 7, '{7}'), (4, 'meh', NULL, 4, NULL);",
    )

    result = migrate(source, target, tmp_path / "1.zip", create=user_rule("upsert"))

    feelings = result["feelings"]
    assert feelings.ddl[0].startswith("CREATE DOMAIN public.good_mood AS mood CONSTRAINT ")
    assert feelings.ddl[1:] == ("ALTER TABLE feelings ADD COLUMN g good_mood",)
    assert (feelings.inserted, feelings.updated, feelings.unchanged) == (2, 1, 0)
    assert rows(target, FEELINGS_SELECT) == rows(source, FEELINGS_SELECT) + [
        (4, "meh", None, 4, None, None)
    ]
    assert enum_labels(target, "mood") == ["sad", "ok", "happy", "it's 50%", "meh"]
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("upsert")
    )


def test_enum_lacking_labels_in_the_target_is_refused_before_anything_is_written(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, ENUM_AND_DOMAIN + GOOD_MOOD + FEELINGS)
    sql(target, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'grumpy');")
    make_file(source, tmp_path / "1.zip", **user_rule("overwrite"))

    with pytest.raises(PlanError) as refused:
        apply_file(tmp_path / "1.zip", target)

    (problem,) = refused.value.problems
    assert problem.startswith(
        "feelings: the target's enum type public.mood lacks the label(s) 'happy', 'it''s 50%' "
    )
    assert "ALTER TYPE public.mood ADD VALUE 'happy'; ALTER TYPE public.mood ADD VALUE" in problem
    assert "nothing was written" in str(refused.value)
    assert tables(target) == []
    assert type_names(target) == ["mood"]
    assert enum_labels(target, "mood") == ["sad", "ok", "grumpy"]


def test_schema_only_new_table_with_an_enum_column_creates_the_type(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        "CREATE TYPE status AS ENUM ('new', 'done');"
        "CREATE TABLE tasks (id integer PRIMARY KEY, s status NOT NULL DEFAULT 'new');"
        "INSERT INTO tasks VALUES (1, 'done');",
    )

    result = migrate(source, target, tmp_path / "1.zip", create=user_rule("schema-only"))

    tasks = result["tasks"]
    assert tasks.ddl[0] == "CREATE TYPE public.status AS ENUM ('new', 'done')"
    assert len(tasks.ddl) == 2 and creates_table(tasks.ddl[1], "tasks")
    assert enum_labels(target, "status") == ["new", "done"]
    assert columns(target, "tasks") == {"id": "integer", "s": "status"}
    assert rows(target, "SELECT * FROM tasks") == []
    sql(target, "INSERT INTO tasks (id) VALUES (1)")
    assert rows(target, "SELECT s::text FROM tasks") == [("new",)]
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("schema-only")
    )


def test_domain_defined_otherwise_in_the_target_is_kept_with_a_warning(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, ENUM_AND_DOMAIN + "CREATE TABLE t (id integer PRIMARY KEY, n posint);")
    sql(source, "INSERT INTO t VALUES (1, 5)")
    sql(target, "CREATE DOMAIN posint AS integer CHECK (VALUE >= 0);")
    make_file(source, tmp_path / "1.zip", **user_rule("overwrite"))

    with open_archive(tmp_path / "1.zip") as reader:
        plan = prepare(reader, target)
    (warning,) = plan.warnings
    assert warning.startswith("t: the target's domain public.posint is defined otherwise")
    assert "it is left as it is" in warning

    result = apply_file(tmp_path / "1.zip", target)

    assert not any("DOMAIN" in stmt for stmt in result["t"].ddl)
    assert rows(target, "SELECT id, n FROM t") == [(1, 5)]
    sql(target, "INSERT INTO t VALUES (2, 0)")  # the target's own check (>= 0) still holds
    assert type_names(target) == ["posint"]


def test_units_at_once_that_need_the_same_enum_create_it_once(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        ENUM_AND_DOMAIN
        + "".join(
            f"CREATE TABLE {t} (id integer PRIMARY KEY, m mood, ms mood[]);"
            f"INSERT INTO {t} VALUES (1, 'ok', '{{happy}}'), (2, NULL, NULL);"
            for t in ("a", "b", "c")
        ),
    )

    result = migrate(source, target, tmp_path / "1.zip", create=user_rule("overwrite"), workers=3)

    created = [name for name, r in result.items() if any("CREATE TYPE" in s for s in r.ddl)]
    assert len(created) == 1, result
    for name in ("a", "b", "c"):
        assert table_text(target, name) == table_text(source, name), name
    assert enum_labels(target, "mood") == enum_labels(source, "mood")
