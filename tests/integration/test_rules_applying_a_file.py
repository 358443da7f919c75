"""Applying one file: the same result on two targets, and units applied at once (``workers``)
end as if applied one after another.

Each rule against real PostgreSQL: every test builds its own small source and target databases
(``source`` / ``target`` fixtures), migrates with the ``generic`` profile (every table is "user")
and asserts on the target's rows and structure, and on the returned counts and DDL. Shared
helpers and tables: tests/integration/rules_tools.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from migration_manager.archive import open_archive
from migration_manager.errors import ApplyError
from tests.integration.rules_tools import (
    DRIFT_BASE,
    DRIFT_SOURCE_CHANGES,
    FK_BASE,
    NOCOBASE_SHAPED,
    assert_second_run_changes_nothing,
    fill_nocobase_shaped,
    tables,
    user_rule,
)
from tests.pgtools import apply_file, make_file, sql, table_text

pytestmark = pytest.mark.postgres


def test_the_file_is_one_snapshot_and_applies_the_same_twice(
    source: str, new_db: Callable[[], str], tmp_path: Path
) -> None:
    """The same file on two targets (staging, then prod) gives the same result."""
    sql(source, DRIFT_BASE + DRIFT_SOURCE_CHANGES)
    path = tmp_path / "m.zip"
    make_file(source, path, **user_rule("overwrite"))
    with open_archive(path) as reader:
        reader.verify()
    a, b = new_db(), new_db()
    apply_file(path, a)
    apply_file(path, b)
    for name in ("items", "fresh"):
        assert table_text(a, name) == table_text(b, name) == table_text(source, name)


def test_units_applied_at_once_end_as_one_after_another(
    source: str, target: str, new_db: Callable[[], str], tmp_path: Path
) -> None:
    """``workers`` applies independent units concurrently (as mapped tasks do): same end state."""
    sql(source, NOCOBASE_SHAPED + FK_BASE)
    fill_nocobase_shaped(source, "large " * 10_000)
    serial_target = new_db()
    make_file(source, tmp_path / "m.zip", **user_rule("overwrite"))
    with open_archive(tmp_path / "m.zip") as reader:
        assert len(reader.manifest.units) >= 4  # several units to run at once

    at_once = apply_file(tmp_path / "m.zip", target, workers=3)
    serial = apply_file(tmp_path / "m.zip", serial_target, workers=1)

    names = tables(source)
    assert tables(target) == names
    for name in names:
        assert table_text(target, name) == table_text(source, name), name
        assert table_text(serial_target, name) == table_text(source, name), name
        assert (at_once[name].inserted, at_once[name].status) == (
            serial[name].inserted,
            serial[name].status,
        ), name
    assert_second_run_changes_nothing(
        source, target, tmp_path / "2.zip", create=user_rule("overwrite"), workers=3
    )


def test_a_failing_unit_among_units_at_once_raises_and_rolls_back_only_itself(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        FK_BASE + "INSERT INTO parent VALUES (6, 'p6'); INSERT INTO child VALUES (16, 6, 'bad');",
    )
    sql(
        source,
        "CREATE TABLE other (id integer PRIMARY KEY, v text); INSERT INTO other VALUES (1, 'x');",
    )
    sql(target, FK_BASE + "ALTER TABLE child ADD CONSTRAINT child_v_ok CHECK (v <> 'bad');")
    make_file(source, tmp_path / "m.zip", **user_rule("overwrite"))
    before = {t: table_text(target, t) for t in ("parent", "child")}

    with pytest.raises(ApplyError, match=r"child: .*child_v_ok.*rolled back"):
        apply_file(tmp_path / "m.zip", target, workers=2)

    assert {t: table_text(target, t) for t in ("parent", "child")} == before
