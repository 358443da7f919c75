"""The XCom models: their XCom form is the one the run log and earlier runs know, and reads back."""

from __future__ import annotations

import json

from migration_manager.airflow.xcom_models import flat_results
from migration_manager.destructive import DestructiveOutcome, DestructivePlan, TableLoss


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
        **dict(plan), mode="fail", decision="refused", refused_by="on_destructive=fail"
    )
    form = refused.model_dump(mode="json")
    assert form["refused_by"] == "on_destructive=fail" and form["destructive"] is True
    assert form["parts"] == plan.parts and len(plan.parts) == 2
    assert DestructiveOutcome.model_validate(json.loads(json.dumps(form))) == refused
    asked = DestructiveOutcome(**dict(plan), mode="ask").model_dump(mode="json")
    assert "refused_by" not in asked and asked["decision"] is None
