"""The plan's report and planned tasks: their XCom form is the one the run log and earlier
runs know, and reads back."""

from __future__ import annotations

import json

from migration_manager.execute import TableResult
from migration_manager.fingerprint import RowFingerprint
from migration_manager.manifest import Table, Unit
from migration_manager.plan_report import PlannedTask, PlannedUnit, PlanReport
from migration_manager.prod_edits import Changed
from migration_manager.step_kinds import StepKind
from migration_manager.step_outcomes import Difference, outcome_of
from tests.factories import manifest_table

FP = RowFingerprint(rows=3, sum0="11", sum1="22", listed=(1, 2, 3))


def test_the_plan_report_round_trips_through_json() -> None:
    report = PlanReport(
        migration_id="m1",
        migration_file="m1.zip",
        source="staging",
        units=(
            Unit(
                id="u1",
                tables=(
                    "a",
                    "b",
                ),
                label="a, b",
            ),
        ),
        rules={"a": "overwrite", "b": "overwrite", "c": "skip"},
        quiet_tables=(TableResult(table="c", rule="skip", status="skipped", reason="rule skip"),),
        warnings=("w",),
        pending=(Difference(table="a", rule="overwrite", changes=["add column x"]),),
        target_key="prod-1-2",
        target_fingerprints={"a": FP, "b": None},
        changed_in_prod=(Changed(table="a", rule="overwrite", recorded_rows=2, rows=3),),
        tasks=(("u1",),),
    )
    form = report.model_dump(mode="json")
    assert set(form) == {
        "migration_id",
        "migration_file",
        "source",
        "units",
        "rules",
        "quiet_tables",
        "warnings",
        "pending",
        "target_key",
        "target_fingerprints",
        "changed_in_prod",
        "tasks",
    }
    assert form["units"] == [{"id": "u1", "tables": ["a", "b"], "label": "a, b"}]
    back = PlanReport.model_validate(json.loads(json.dumps(form)))
    assert back == report
    assert back.applied_tables == {"a", "b"}
    # a report of an older run, without the later keys, still reads
    old = PlanReport.model_validate({"migration_id": "m0", "units": form["units"]})
    assert old.target_key is None and old.changed_in_prod == () and old.rules == {}
    assert old.task_units == ((report.units[0],),)  # before packing: one task per unit
    assert PlanReport.pulled(None) is None
    # a key an earlier version pushed as null takes its default
    assert PlanReport.model_validate({"migration_id": None, "source": None}).migration_id == ""


def test_the_plan_report_is_the_plans_step_in_the_record() -> None:
    report = PlanReport(
        units=(Unit(id="u1", tables=("a",), label="a (overwrite)"),),
        quiet_tables=(TableResult(table="c", rule="skip", status="skipped"),),
        pending=(
            Difference(table="a", rule="overwrite", changes=["add column x"]),
            Difference(table="b", rule="overwrite"),  # rows only: not a structure difference
        ),
        changed_in_prod=(Changed(table="a", rule="overwrite", recorded_rows=2, rows=3),),
    )
    outcome = report.outcome()
    assert outcome.model_dump(exclude_unset=True, mode="json") == {
        "units": ["a (overwrite)"],
        "differences": [{"table": "a", "rule": "overwrite", "changes": ["add column x"]}],
        "unchanged": 1,
        "changed_in_prod": ["a"],
    }
    assert outcome_of(StepKind.PLAN, outcome) is outcome


def test_a_planned_unit_is_the_unit_plus_what_apply_table_needs() -> None:
    planned = PlannedUnit(
        id="u1",
        tables=("a",),
        label="a",
        migration_file="m1.zip",
        entries={"a": Table.model_validate(manifest_table("a", "overwrite", None))},
        checked=frozenset({"a"}),
        fingerprints={"a": FP, "b": None},
    )
    form = planned.model_dump(mode="json")
    # the map index's label is read from the XCom form (map_index_template)
    assert form["label"] == "a" and form["id"] == "u1" and form["checked"] == ["a"]
    assert PlannedUnit.model_validate(json.loads(json.dumps(form))) == planned
    assert form["entries"]["a"]["schema"] == "public"  # the file's keys, aliases included
    assert planned.unit == Unit(id="u1", tables=("a",), label="a")
    # a unit planned before entries and fingerprints were passed along
    old = PlannedUnit.model_validate({"id": "u1", "tables": ["a"], "label": "a"})
    assert old.entries is None and old.fingerprints is None and old.checked == frozenset()


def test_a_planned_task_lists_its_units_and_names_them() -> None:
    units = [
        PlannedUnit(id=f"u{i}", tables=(f"t{i}",), label=f"t{i} (overwrite)") for i in range(40)
    ]
    one, packed = PlannedTask(units=tuple(units[:1])), PlannedTask(units=tuple(units))
    # a task of one unit keeps the unit's name ("<table> (<rule>)"); a packed one its tables
    assert one.model_dump(mode="json")["label"] == "t0 (overwrite)"
    assert packed.model_dump(mode="json")["label"].startswith("t0, t1, ") and "more" in packed.label
    assert (
        PlannedTask.model_validate(json.loads(json.dumps(packed.model_dump(mode="json")))) == packed
    )
    # a task planned before packing (one PlannedUnit) reads as a task of that unit
    assert PlannedTask.model_validate(units[3].model_dump(mode="json")) == PlannedTask(
        units=(units[3],)
    )
