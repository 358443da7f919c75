"""How rows are matched and reported: key-less tables as multisets, unique values that swap
between rows, and the sample keys each result keeps.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.rules_tools import user_rule
from tests.pgtools import migrate, sql, table_text

pytestmark = pytest.mark.postgres


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
