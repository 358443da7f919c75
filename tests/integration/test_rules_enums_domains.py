"""Enum and domain columns: their types are created, reused or refused in the target.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from migration_manager.archive import open_archive
from migration_manager.errors import PlanError
from migration_manager.execute import prepare
from tests.integration.rules_tools import (
    assert_second_run_changes_nothing,
    columns,
    creates_table,
    tables,
    user_rule,
)
from tests.pgtools import apply_file, make_file, migrate, rows, scalar, sql, table_text

pytestmark = pytest.mark.postgres


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
