"""Upsert/overwrite decide "changed" by the rows' text, also where bytes and equality disagree.

``rules.upsert`` first compares the rows' stored bytes (``record_image_eq``) and only builds
their text when the bytes differ; the text still decides. These cases print differently
while being equal by ``=`` (or having no ``=`` at all), so each must count as updated; the
identical rows must count as unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pgtools import migrate, sql, table_text

pytestmark = pytest.mark.postgres

TABLE = """
CREATE TABLE t (
  id bigint PRIMARY KEY, j json, b jsonb, n numeric, f float8, s text, a text[], big json
);
"""
# Rows 1, 2 and 8 are the same on both sides (8 has a TOASTed value); the others differ
# only in how they print.
SOURCE_ROWS = """
INSERT INTO t (id, j, b, n, f, s, a) VALUES
  (1, '{"a": 1}', '{"x": 1}', 1.5, 0.5, 'same', '{a,b}'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, '{"a": 1}', NULL, NULL, NULL, NULL, NULL),
  (4, NULL, '{"x": 1.0}', NULL, NULL, NULL, NULL),
  (5, NULL, NULL, 1.0, NULL, NULL, NULL),
  (6, NULL, NULL, NULL, 0, NULL, NULL),
  (7, NULL, NULL, NULL, NULL, '', '{}');
INSERT INTO t (id, big) SELECT 8, json_build_object('k', repeat(md5('x'), 400));
"""
TARGET_ROWS = """
INSERT INTO t (id, j, b, n, f, s, a) VALUES
  (1, '{"a": 1}', '{"x": 1}', 1.5, 0.5, 'same', '{a,b}'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, '{"a":1}', NULL, NULL, NULL, NULL, NULL),
  (4, NULL, '{"x": 1.00}', NULL, NULL, NULL, NULL),
  (5, NULL, NULL, 1.00, NULL, NULL, NULL),
  (6, NULL, NULL, NULL, '-0', NULL, NULL),
  (7, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO t (id, big) SELECT 8, json_build_object('k', repeat(md5('x'), 400));
"""


@pytest.mark.parametrize("rule", ["upsert", "overwrite"])
def test_rows_that_print_differently_are_updated_identical_ones_left(
    source: str, target: str, tmp_path: Path, rule: str
) -> None:
    sql(source, TABLE + SOURCE_ROWS)
    sql(target, TABLE + TARGET_ROWS)
    r = migrate(source, target, tmp_path / "m.zip", create={"rules": {"user": {"default": rule}}})[
        "t"
    ]
    assert (r.inserted, r.updated, r.deleted, r.unchanged) == (0, 5, 0, 3)
    assert table_text(target, "t") == table_text(source, "t")
    again = migrate(
        source, target, tmp_path / "m2.zip", create={"rules": {"user": {"default": rule}}}
    )["t"]
    assert (again.inserted, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 8)
