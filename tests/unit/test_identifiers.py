"""Names that hold SQL's own punctuation, parsed and compared without a database."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from migration_manager.errors import ApplyError
from migration_manager.pg import endpoint, same_database
from migration_manager.schema import SequenceStructure, create_sequence_sql
from migration_manager.schema.sqltext import seq_name


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("a_id_seq", (None, "a_id_seq")),
        ('public."A_id_seq"', ("public", "A_id_seq")),
        ("\"it''s_id_seq\"", (None, "it's_id_seq")),  # as inside nextval('...'): quotes doubled
        ('"dot.a"."x.y_seq"', ("dot.a", "x.y_seq")),
        ('"we""ird".s', ('we"ird', "s")),
    ],
)
def test_sequence_names_inside_nextval(literal: str, expected: tuple[str | None, str]) -> None:
    assert seq_name(literal) == expected


def _seq(**changes: object) -> SequenceStructure:
    base: dict[str, object] = {
        "name": "s'; DROP TABLE x; --",
        "schema": 'a"b',
        "column": "id",
        "data_type": "integer",
        "start": 1,
        "increment": 1,
        "min_value": 1,
        "max_value": 10,
        "cache": 1,
        "cycle": False,
        "last_value": None,
    }
    base.update(changes)
    return SequenceStructure.model_validate(base)


def test_create_sequence_quotes_names_and_checks_every_number() -> None:
    text = create_sequence_sql(_seq()).as_string(None)
    assert text.startswith('CREATE SEQUENCE "a""b"."s\'; DROP TABLE x; --" AS integer ')
    with pytest.raises(ApplyError, match="data type 'integer; DROP TABLE x' is not one of"):
        create_sequence_sql(_seq(data_type="integer; DROP TABLE x"))
    # the model refuses a number that is not one; a structure made without validation still
    # meets create_sequence_sql's own check
    with pytest.raises(ValidationError, match="increment"):
        _seq(increment="1; DROP TABLE x")
    unchecked = _seq().model_copy(update={"increment": "1; DROP TABLE x"})
    with pytest.raises(ApplyError, match="increment '1; DROP TABLE x' is not an integer"):
        create_sequence_sql(unchecked)


def test_same_database_resolves_the_host_not_the_spelling() -> None:
    a = "postgresql://app@127.0.0.1:5432/prod"
    assert same_database(a, "postgresql://other:secret@localhost/prod") is not None
    assert same_database(a, "host=/var/run/postgresql dbname=prod") is not None
    assert same_database(a, "postgresql://app@127.0.0.1:5432/staging") is None
    assert same_database(a, "postgresql://app@127.0.0.1:5433/prod") is None
    assert same_database(a, "postgresql://app@192.0.2.10/prod") is None
    assert endpoint(a).shown == "database prod on 127.0.0.1:5432"
