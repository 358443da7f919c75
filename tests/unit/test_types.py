"""schema.type_from_text: PostgreSQL's format_type() texts to SQLAlchemy types and back to DDL."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from migration_manager.schema import (
    ColumnStructure,
    RawType,
    TableStructure,
    TypeStructure,
    create_type_sql,
    to_table,
    type_from_text,
    type_text,
)
from migration_manager.schema.comparators import compare_type
from migration_manager.table_structure import TypeCheck

# format_type() text -> the type's DDL as the engine writes it on the target
ROUND_TRIPS = {
    "character varying(255)": "VARCHAR(255)",
    "character varying": "VARCHAR",
    "character(1)": "CHAR(1)",
    "text": "TEXT",
    "text[]": "TEXT[]",
    "character varying(255)[]": "VARCHAR(255)[]",
    "integer[]": "INTEGER[]",
    "timestamp(3) with time zone": "TIMESTAMP(3) WITH TIME ZONE",
    "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "timestamp without time zone": "TIMESTAMP WITHOUT TIME ZONE",
    "timestamp(0) without time zone": "TIMESTAMP(0) WITHOUT TIME ZONE",
    "time with time zone": "TIME WITH TIME ZONE",
    "time(6) without time zone": "TIME(6) WITHOUT TIME ZONE",
    "timestamp with time zone[]": "TIMESTAMP WITH TIME ZONE[]",
    "numeric(10,2)": "NUMERIC(10, 2)",
    "numeric(10,0)": "NUMERIC(10, 0)",
    "numeric": "NUMERIC",
    "numeric(5,1)[]": "NUMERIC(5, 1)[]",
    "double precision": "DOUBLE PRECISION",
    "real": "REAL",
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "json": "JSON",
    "jsonb": "JSONB",
    "jsonb[]": "JSONB[]",
    "uuid": "UUID",
    "interval": "INTERVAL",
    "interval(2)": "INTERVAL (2)",  # SQLAlchemy spaces it; PostgreSQL takes both
    "interval year to month": "INTERVAL YEAR TO MONTH",
    "date": "DATE",
    "bytea": "BYTEA",
    "inet": "INET",
    "bit(3)": "BIT(3)",
    "bit varying(5)": "BIT VARYING(5)",
    "bit varying": "BIT VARYING",
    "tsvector": "TSVECTOR",
}


@pytest.mark.parametrize(("text", "ddl"), list(ROUND_TRIPS.items()))
def test_format_type_text_becomes_the_same_type_in_ddl(text: str, ddl: str) -> None:
    assert type_text(type_from_text(text)).upper() == ddl


@pytest.mark.parametrize("text", list(ROUND_TRIPS))
def test_type_text_is_stable(text: str) -> None:
    """Two parses of one text render alike: the comparison never sees a change that is not one."""
    assert type_text(type_from_text(text)) == type_text(type_from_text(text))
    assert type_text(type_from_text(f"  {text} ")) == type_text(type_from_text(text))


def test_varchar_keeps_its_length() -> None:
    t = type_from_text("character varying(255)")
    assert isinstance(t, sa.VARCHAR) and t.length == 255
    assert type_from_text("character varying").length is None  # type: ignore[attr-defined]


def test_arrays_keep_their_item_type() -> None:
    t = type_from_text("text[]")
    assert isinstance(t, postgresql.ARRAY) and isinstance(t.item_type, sa.TEXT)
    ints = type_from_text("integer[]")
    assert isinstance(ints, postgresql.ARRAY) and isinstance(ints.item_type, sa.INTEGER)


def test_arrays_of_arrays_are_one_array_with_dimensions() -> None:
    """format_type() prints one [] whatever the dimensions, but a hand-made text must not crash."""
    t = type_from_text("integer[][]")
    assert isinstance(t, postgresql.ARRAY) and t.dimensions == 2
    assert isinstance(t.item_type, sa.INTEGER)
    assert type_text(t) == "INTEGER[][]"


def test_timestamps_keep_precision_and_time_zone() -> None:
    t = type_from_text("timestamp(3) with time zone")
    assert isinstance(t, postgresql.TIMESTAMP)
    assert (t.precision, t.timezone) == (3, True)
    plain = type_from_text("timestamp without time zone")
    assert isinstance(plain, postgresql.TIMESTAMP)
    assert (plain.precision, plain.timezone) == (None, False)


def test_numeric_keeps_precision_and_scale() -> None:
    t = type_from_text("numeric(10,2)")
    assert isinstance(t, sa.Numeric) and (t.precision, t.scale) == (10, 2)
    bare = type_from_text("numeric")
    assert isinstance(bare, sa.Numeric) and (bare.precision, bare.scale) == (None, None)


def test_double_precision_jsonb_uuid_interval() -> None:
    assert isinstance(type_from_text("double precision"), postgresql.DOUBLE_PRECISION)
    assert isinstance(type_from_text("jsonb"), postgresql.JSONB)
    assert isinstance(type_from_text("json"), postgresql.JSON)
    assert isinstance(type_from_text("uuid"), sa.Uuid)
    interval = type_from_text("interval day to second(3)")
    assert isinstance(interval, postgresql.INTERVAL)
    assert (interval.fields, interval.precision) == ("day to second", 3)


def test_bit_varying_stays_varying() -> None:
    t = type_from_text("bit varying(5)")
    assert isinstance(t, postgresql.BIT) and t.varying and t.length == 5


@pytest.mark.parametrize(
    "text",
    [
        "mood",  # an enum
        "public.citext",  # an extension type, schema-qualified
        'app."MyDomain"',  # a quoted domain in another schema
        "geometry(Point,4326)",  # arguments SQLAlchemy's type would not take
        "mood[]",
    ],
)
def test_unknown_types_are_kept_as_raw_text(text: str) -> None:
    t = type_from_text(text)
    base = t.item_type if isinstance(t, postgresql.ARRAY) else t
    assert isinstance(base, RawType)
    assert type_text(t) == text


def test_raw_type_renders_its_text() -> None:
    assert RawType("mood").get_col_spec() == "mood"
    assert type_text(RawType('app."MyDomain"')) == 'app."MyDomain"'


def test_table_structure_round_trips_through_json() -> None:
    s = TableStructure(
        name="uiSchemas",
        schema="public",
        columns=(
            ColumnStructure(name="x-uid", type="character varying(255)", nullable=False),
            ColumnStructure(name="schema", type="json", nullable=True, default="'{}'::json"),
            ColumnStructure(
                name="n", type="integer", nullable=False, identity={"always": True, "start": 1}
            ),
        ),
        primary_key=("x-uid",),
        primary_key_name="uiSchemas_pkey",
    )
    document = s.model_dump(mode="json", by_alias=True)
    assert TableStructure.model_validate(json.loads(json.dumps(document))) == s
    table = to_table(s, sa.MetaData())
    assert [type_text(c.type) for c in table.columns] == ["VARCHAR(255)", "JSON", "INTEGER"]
    assert table.c["n"].identity is not None and table.c["n"].identity.always


MOOD = TypeStructure(schema="public", name="mood", kind="enum", labels=("sad", "it's 50%"))
POSINT = TypeStructure(
    schema="app",
    name="PosInt",
    kind="domain",
    base_type="integer",
    not_null=True,
    default="1",
    checks=(TypeCheck(name="positive", definition="CHECK ((VALUE > 0)) NOT VALID"),),
)


def test_types_round_trip_through_json_and_old_structures_have_none() -> None:
    s = TableStructure(
        name="t",
        schema="public",
        columns=(ColumnStructure(name="m", type="mood", nullable=True),),
        types=(MOOD, POSINT),
    )
    document = s.model_dump(mode="json", by_alias=True)
    assert TableStructure.model_validate(json.loads(json.dumps(document))) == s
    assert document["types"][1]["checks"] == [
        {"name": "positive", "definition": "CHECK ((VALUE > 0)) NOT VALID"}
    ]
    del document["types"]  # a file written before types were recorded
    assert TableStructure.model_validate(document).types == ()


def test_enums_and_domains_are_created_with_quoted_names_and_literal_labels() -> None:
    assert create_type_sql(MOOD) == "CREATE TYPE public.mood AS ENUM ('sad', 'it''s 50%')"
    # CREATE DOMAIN takes no NOT VALID (only ALTER DOMAIN does)
    assert create_type_sql(POSINT) == (
        'CREATE DOMAIN app."PosInt" AS integer DEFAULT 1 NOT NULL '
        "CONSTRAINT positive CHECK ((VALUE > 0))"
    )


def _differs(reflected: sa.types.TypeEngine, from_file: str) -> bool:
    context = SimpleNamespace(dialect=SimpleNamespace(default_schema_name="public"))
    return compare_type(context, None, None, reflected, type_from_text(from_file))


def test_reflected_enums_and_domains_equal_their_format_type_text() -> None:
    """The target reflects ENUM/DOMAIN objects; the file has format_type() text (RawType)."""
    mood = postgresql.ENUM("sad", "ok", name="mood", create_type=False)
    assert not _differs(mood, "mood")
    assert not _differs(postgresql.ARRAY(mood), "mood[]")
    assert not _differs(mood, "public.mood")  # default schema: the same type
    assert not _differs(postgresql.ENUM("sad", name="mood", schema="public"), "mood")
    assert not _differs(postgresql.ENUM("a", name="Mood"), '"Mood"')
    assert not _differs(postgresql.ENUM("a", name="mood", schema="app"), "app.mood")
    assert not _differs(postgresql.DOMAIN("posint", sa.Integer()), "posint")
    # but another type is a change
    assert _differs(mood, "text")
    assert _differs(mood, "feeling")
    assert _differs(postgresql.ENUM("a", name="mood", schema="app"), "mood")
    assert _differs(postgresql.ENUM("a", name="Mood"), "mood")
    assert _differs(postgresql.DOMAIN("posint", sa.Integer()), "integer")
