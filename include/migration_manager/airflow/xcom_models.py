"""What crosses XCom between the tasks of a migration run, besides the engine's own models.

The plan's report and its planned tasks are engine models (:mod:`migration_manager.plan_report`);
here are the destructive check's outcome (``to_xcom()`` gives the JSON-able form XCom carries,
``from_xcom()`` reads it back) and the units' results as ``collect_logs`` pulls them.

Imported when a task runs (the engine types it uses import SQLAlchemy), never by a DAG file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migration_manager.destructive import DestructivePlan
from migration_manager.execute.results import UnitResult

Json = dict[str, Any]  # a JSON document as it crosses XCom

__all__ = ["DestructiveOutcome", "UnitResult", "unit_results"]


@dataclass(frozen=True)
class DestructiveOutcome:
    """``destructive_check``'s outcome (its return value, and XCom key ``destructive`` when the
    plan is destructive): the destructive parts, the decision and who made or refused it."""

    plan: DestructivePlan
    mode: str
    decision: str | None = None
    decided_by: str | None = None
    refused_by: str | None = None  # set when the plan was refused: on_destructive=fail, rejected

    @property
    def parts(self) -> list[str]:
        return self.plan.parts

    def to_xcom(self) -> Json:
        out: Json = {
            **self.plan.model_dump(mode="json"),
            "mode": self.mode,
            "decision": self.decision,
            "decided_by": self.decided_by,
        }
        if self.refused_by is not None:
            out["refused_by"] = self.refused_by
        return out

    @classmethod
    def from_xcom(cls, d: Mapping[str, Any]) -> DestructiveOutcome:
        return cls(
            plan=DestructivePlan.model_validate(d),
            mode=str(d.get("mode") or ""),
            decision=d.get("decision"),
            decided_by=d.get("decided_by"),
            refused_by=d.get("refused_by"),
        )


def unit_results(values: Any) -> list[UnitResult]:
    """The units' results in the mapped ``apply_table`` return values that exist."""
    return [UnitResult.model_validate(v) for v in flat_results(values)]


def flat_results(values: Any) -> list[Json]:
    """The mapped ``apply_table`` return values as one list of unit results (XCom form).

    A task returns a list, one result per unit it applied (a failed task pushes the results
    of its units that were applied); a task of a run from before the packing returned one
    result; a task that pushed nothing gives None.
    """
    out: list[Json] = []
    for value in values or []:
        if isinstance(value, Mapping):
            out.append(dict(value))
        elif isinstance(value, list):
            out.extend(dict(v) for v in value if isinstance(v, Mapping))
    return out
