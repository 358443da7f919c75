"""Tables linked by a foreign key: one unit, parent first, rolled back together.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_manager.errors import ApplyError
from tests.integration.rules_tools import (
    FK_BASE,
    FK_TABLES,
    assert_second_run_changes_nothing,
    user_rule,
)
from tests.pgtools import apply_file, make_file, migrate, rows, scalar, sql, table_text

pytestmark = pytest.mark.postgres


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
