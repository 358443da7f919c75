"""plan.pack_units and plan.task_label: few apply tasks for many units; execute.apply_units:
a task's units one after another."""

from __future__ import annotations

import pytest

from migration_manager.errors import ApplyError, TransientError
from migration_manager.execute import TableResult, UnitResult, apply_units
from migration_manager.plan import TABLE_COST_BYTES, Unit, pack_units, task_label, unit_weight


def units(n: int) -> list[Unit]:
    return [
        Unit(id=f"{i:04d}", tables=(f"t{i:04d}",), label=f"t{i:04d} (overwrite)")
        for i in range(1, n + 1)
    ]


def ids(tasks: list[tuple[Unit, ...]]) -> list[list[str]]:
    return [[u.id for u in task] for task in tasks]


def test_few_units_keep_a_task_each() -> None:
    plan = units(8)
    assert ids(pack_units(plan, {}, 8)) == [[u.id] for u in plan]
    assert ids(pack_units(plan, {}, 0)) == [[u.id] for u in plan]  # packing off


def test_many_small_units_share_at_most_max_tasks_of_equal_size() -> None:
    plan = units(400)
    tasks = pack_units(plan, {}, 4)
    assert len(tasks) == 4
    assert sorted(len(t) for t in tasks) == [100, 100, 100, 100]
    # every unit exactly once, each task in the plan's order, tasks by their first unit
    assert sorted(u.id for t in tasks for u in t) == [u.id for u in plan]
    for task in tasks:
        assert [u.id for u in task] == sorted(u.id for u in task)
    assert [t[0].id for t in tasks] == sorted(t[0].id for t in tasks)


def test_large_units_keep_a_task_of_their_own() -> None:
    plan = units(50)
    sizes = {"t0007": 500 * TABLE_COST_BYTES, "t0031": 400 * TABLE_COST_BYTES}
    tasks = pack_units(plan, sizes, 4)
    assert len(tasks) == 4
    assert [i for i in ids(tasks) if "0007" in i] == [["0007"]]
    assert [i for i in ids(tasks) if "0031" in i] == [["0031"]]
    small = [t for t in tasks if len(t) > 1]
    assert sorted(len(t) for t in small) == [24, 24]


def test_a_unit_of_several_tables_weighs_each_of_them_and_is_never_split() -> None:
    fk = Unit(id="0001", tables=("roles", "users", "rolesUsers"), label="roles, users, rolesUsers")
    assert unit_weight(fk, {"users": 10}) == 3 * TABLE_COST_BYTES + 10
    plan = [fk, *units(9)[1:]]
    tasks = pack_units(plan, {}, 3)
    assert len(tasks) == 3 and sum(len(t) for t in tasks) == 9
    # the heaviest unit (three tables) is placed first, on a task of its own choosing
    assert [t for t in tasks if fk in t][0][0] == fk


def test_packing_is_deterministic_and_balanced_by_size() -> None:
    plan = units(37)
    sizes = {u.tables[0]: (i * 7919) % 5_000_000 for i, u in enumerate(plan)}
    first = pack_units(plan, sizes, 6)
    assert ids(first) == ids(pack_units(list(plan), dict(sizes), 6))
    loads = [sum(unit_weight(u, sizes) for u in t) for t in first]
    assert len(first) == 6
    assert max(loads) - min(loads) <= max(unit_weight(u, sizes) for u in plan)


def test_more_tasks_than_units_of_work_leaves_no_empty_task() -> None:
    plan = units(5)
    tasks = pack_units(plan, {"t0001": 100 * TABLE_COST_BYTES}, 4)
    assert all(tasks) and sum(len(t) for t in tasks) == 5 and len(tasks) <= 4


def test_a_packed_task_is_named_after_its_tables() -> None:
    plan = units(40)
    assert task_label(plan[:1]) == "t0001 (overwrite)"  # one unit: the unit's own label
    label = task_label(plan)
    assert label.startswith("t0001, t0002, ") and label.endswith(" more")
    shown = label.split(", +")[0].split(", ")
    assert label == f"{', '.join(shown)}, +{40 - len(shown)} more"
    assert len(label) < 100


def _result(unit: Unit) -> UnitResult:
    return UnitResult(
        unit=unit.id,
        tables=(TableResult(table=unit.tables[0], rule="overwrite", status="applied", inserted=1),),
        seconds=0.1,
    )


def test_apply_units_goes_on_after_a_failed_unit() -> None:
    plan = units(4)
    applied: list[str] = []

    def apply(unit: Unit) -> UnitResult:
        applied.append(unit.id)
        if unit.id == "0002":
            raise ApplyError("t0002: invalid input syntax for type integer", terminal=True)
        return _result(unit)

    outcome = apply_units(plan, apply)
    assert applied == ["0001", "0002", "0003", "0004"]
    assert [r.unit for r in outcome.results] == ["0001", "0003", "0004"]
    assert [f.unit.id for f in outcome.failures] == ["0002"] and outcome.terminal
    assert "t0002 (overwrite): t0002: invalid input syntax" in outcome.error_text()
    assert "1 of 4 unit(s)" in outcome.error_text()


def test_apply_units_reports_units_an_earlier_try_applied_without_applying_them() -> None:
    plan = units(3)
    earlier = {"0001": _result(plan[0]), "0003": _result(plan[2])}
    applied: list[str] = []

    def apply(unit: Unit) -> UnitResult:
        applied.append(unit.id)
        raise TransientError("connection dropped")

    outcome = apply_units(plan, apply, done=earlier)
    assert applied == ["0002"]
    assert [r.unit for r in outcome.results] == ["0001", "0003"]
    assert outcome.reused == ("0001", "0003")
    assert not outcome.terminal  # a retry may help


def test_apply_units_lets_a_bug_through() -> None:
    def apply(unit: Unit) -> UnitResult:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        apply_units(units(2), apply)
