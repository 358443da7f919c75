"""What crosses XCom between the tasks of a migration run, besides the engine's own models.

What crosses XCom is the engine's models as ``model_dump(mode="json")``: the plan's report and
its planned tasks (:mod:`migration_manager.plan_report`), the destructive check's outcome
(:class:`migration_manager.destructive.DestructiveOutcome`), the units' results. Here is how
``collect_logs`` reads the units' results from the mapped tasks' return values.

Imported when a task runs (the engine types it uses import SQLAlchemy), never by a DAG file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migration_manager.execute.results import UnitResult

Json = dict[str, Any]  # a JSON document as it crosses XCom

__all__ = ["UnitResult", "unit_results"]


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
