"""Sequences: a migrated serial table hands out ids past its rows (and past the source's last
value); a sequence ahead in the target is not moved back; schema-only starts it afresh.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.rules_tools import user_rule
from tests.pgtools import migrate, scalar, sql, table_text

pytestmark = pytest.mark.postgres


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
