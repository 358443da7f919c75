"""What only the target has: a column is kept unless ``allow_drop``; a table never dropped.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.rules_tools import columns, tables, user_rule
from tests.pgtools import migrate, rows, sql, table_text

pytestmark = pytest.mark.postgres


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
