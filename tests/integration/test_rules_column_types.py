"""Column types: common PostgreSQL types arrive as the same types with the same values;
generated columns are computed by the target.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.rules_tools import assert_second_run_changes_nothing, columns, user_rule
from tests.pgtools import migrate, rows, scalar, sql, table_text

pytestmark = pytest.mark.postgres


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
