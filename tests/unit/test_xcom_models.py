"""The XCom models: their XCom form is the one the run log and earlier runs know, and reads back."""

from __future__ import annotations

import json

from migration_manager.airflow.xcom_models import (
    DestructiveOutcome,
    PlannedTask,
    PlannedUnit,
    PlanReport,
    flat_results,
)
from migration_manager.destructive import DestructivePlan, TableLoss
from migration_manager.execute import TableResult
from migration_manager.fingerprint import RowFingerprint
from migration_manager.plan import Unit
from migration_manager.prod_edits import Changed

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
        pending=({"table": "a", "rule": "overwrite", "changes": ["add column x"]},),
        target_key="prod-1-2",
        target_fingerprints={"a": FP, "b": None},
        changed_in_prod=(Changed(table="a", rule="overwrite", recorded_rows=2, rows=3),),
        tasks=(("u1",),),
    )
    form = report.to_xcom()
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
    back = PlanReport.from_xcom(json.loads(json.dumps(form)))
    assert back == report
    assert back.applied_tables == {"a", "b"}
    # a report of an older run, without the later keys, still reads
    old = PlanReport.from_xcom({"migration_id": "m0", "units": form["units"]})
    assert old.target_key is None and old.changed_in_prod == () and old.rules == {}
    assert old.task_units == ((report.units[0],),)  # before packing: one task per unit
    assert PlanReport.from_optional(None) is None


def test_a_planned_unit_is_the_unit_plus_what_apply_table_needs() -> None:
    planned = PlannedUnit(
        unit=Unit(id="u1", tables=("a",), label="a"),
        migration_file="m1.zip",
        entries={"a": {"name": "a", "rule": "overwrite"}},
        checked=frozenset({"a"}),
        fingerprints={"a": None},
    )
    form = planned.to_xcom()
    # the map index's label is read from the XCom form (map_index_template)
    assert form["label"] == "a" and form["id"] == "u1" and form["checked"] == ["a"]
    assert PlannedUnit.from_xcom(json.loads(json.dumps(form))) == planned
    # a unit planned before entries and fingerprints were passed along
    old = PlannedUnit.from_xcom({"id": "u1", "tables": ["a"], "label": "a"})
    assert old.entries is None and old.fingerprints is None and old.checked == frozenset()


def test_a_planned_task_lists_its_units_and_names_them() -> None:
    units = [
        PlannedUnit(unit=Unit(id=f"u{i}", tables=(f"t{i}",), label=f"t{i} (overwrite)"))
        for i in range(40)
    ]
    one, packed = PlannedTask(units=tuple(units[:1])), PlannedTask(units=tuple(units))
    # a task of one unit keeps the unit's name ("<table> (<rule>)"); a packed one its tables
    assert one.to_xcom()["label"] == "t0 (overwrite)"
    assert packed.to_xcom()["label"].startswith("t0, t1, ") and "more" in packed.label
    assert PlannedTask.from_xcom(json.loads(json.dumps(packed.to_xcom()))) == packed
    # a task planned before packing (one PlannedUnit) reads as a task of that unit
    assert PlannedTask.from_xcom(units[3].to_xcom()) == PlannedTask(units=(units[3],))


def test_every_unit_result_is_read_from_packed_and_older_tasks() -> None:
    r = {"unit": "u1", "tables": [], "seconds": 0.1}
    values = [[r, {**r, "unit": "u2"}], None, {**r, "unit": "u3"}, []]
    assert [x["unit"] for x in flat_results(values)] == ["u1", "u2", "u3"]


def test_a_refusal_keeps_who_refused_and_the_parts() -> None:
    plan = DestructivePlan(
        max_delete_ratio=0.1,
        losses=(TableLoss(table="a", target_rows=10, deleted=9),),
        drops=("a: drop column x",),
    )
    refused = DestructiveOutcome(
        plan=plan, mode="fail", decision="refused", refused_by="on_destructive=fail"
    )
    form = refused.to_xcom()
    assert form["refused_by"] == "on_destructive=fail" and form["destructive"] is True
    assert form["parts"] == plan.parts and len(plan.parts) == 2
    assert DestructiveOutcome.from_xcom(json.loads(json.dumps(form))) == refused
    assert "refused_by" not in DestructiveOutcome(plan=plan, mode="ask").to_xcom()
