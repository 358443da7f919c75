"""NocoBase-shaped tables (quoted camelCase names, composite and string keys, identities,
a key-less table, arrays, JSON, a 3 MB value): overwrite, upsert, insert-ignore, and reruns.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.rules_tools import (
    NOCOBASE_SHAPED,
    assert_second_run_changes_nothing,
    columns,
    creates_table,
    fill_nocobase_shaped,
    tables,
    user_rule,
)
from tests.pgtools import migrate, rows, scalar, sql, table_text

pytestmark = pytest.mark.postgres


LARGE = os.urandom(3 * 1024 * 1024 // 2).hex()  # 3 MB of text in one value


def test_nocobase_shaped_tables_overwrite_then_rerun_changes_nothing(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, NOCOBASE_SHAPED)
    fill_nocobase_shaped(source, LARGE)
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
    fill_nocobase_shaped(source, "large " * 100_000)
    sql(target, NOCOBASE_SHAPED)
    fill_nocobase_shaped(target, "old large value")
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
