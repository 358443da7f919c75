"""What the plan of a run decided, as the run's tasks receive it.

:class:`PlanReport` is the plan's report (XCom key ``report``): what the run will do, read by the
checks, the backup, the log and the record of the target's fingerprints. :class:`PlannedTask` is
one element of the plan's return value: what one mapped ``apply_table`` applies. Both travel as
``model_dump(mode="json")`` and are read back with ``model_validate``, also from the XComs of
runs planned by earlier versions (absent keys take their defaults).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field, field_serializer, model_validator

from migration_manager.execute.results import ExecutionPlan, TableResult
from migration_manager.fingerprint import RowFingerprint
from migration_manager.manifest import Table, Unit
from migration_manager.plan import task_label
from migration_manager.prod_edits import Changed
from migration_manager.step_outcomes import Difference, PlanOutcome

__all__ = ["PlanReport", "PlannedTask", "PlannedUnit", "planned_tasks"]


class PlanReport(BaseModel):
    """``plan``'s report: what the run will do, for the checks and the log."""

    model_config = ConfigDict(frozen=True)

    migration_id: str = ""
    migration_file: str = ""
    source: str | None = None
    units: tuple[Unit, ...] = ()
    rules: dict[str, str] = {}  # table -> rule, every table of the file
    quiet_tables: tuple[TableResult, ...] = ()  # tables needing no unit, with the reason
    warnings: tuple[str, ...] = ()
    # per table with work to do: rule and the structure differences found (for the log)
    pending: tuple[Difference, ...] = ()
    # the target as the plan saw it: recorded after the run, checked by each unit
    target_key: str | None = None
    target_fingerprints: dict[str, RowFingerprint | None] = {}
    # tables changed in the target since the last migration, whose rows the rule would replace
    changed_in_prod: tuple[Changed, ...] = ()
    # the units' ids of each mapped apply_table, by map index (empty: one task per unit)
    tasks: tuple[tuple[str, ...], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _without_nulls(cls, v: Any) -> Any:
        """A key an earlier version pushed as null takes its default."""
        if isinstance(v, Mapping):
            return {k: x for k, x in v.items() if x is not None}
        return v

    @classmethod
    def pulled(cls, value: object) -> PlanReport | None:
        """The report a task pulled, or None when the plan pushed none (it failed, or never ran)."""
        return cls.model_validate(value) if value else None

    @property
    def task_units(self) -> tuple[tuple[Unit, ...], ...]:
        """The units of each mapped ``apply_table``, by map index."""
        if not self.tasks:
            return tuple((u,) for u in self.units)
        by_id = {u.id: u for u in self.units}
        return tuple(tuple(by_id[i] for i in ids) for ids in self.tasks)

    @property
    def applied_tables(self) -> set[str]:
        """The tables some unit applies."""
        return {t for u in self.units for t in u.tables}

    def outcome(self) -> PlanOutcome:
        """The plan's step in the run record: its units, the differences, the prod edits (the
        model keeps ``changed_in_prod`` only when there are some)."""
        return PlanOutcome.model_validate(
            {
                "units": [u.label or u.id for u in self.units],
                "differences": [p for p in self.pending if p.changes],
                "unchanged": len(self.quiet_tables),
                "changed_in_prod": [c.table for c in self.changed_in_prod],
            }
        )


class PlannedUnit(BaseModel):
    """One unit of a :class:`PlannedTask`: the unit's own fields (``id``, ``tables``, ``label``)
    and what applying it needs, so that clearing one map index applies exactly that unit again."""

    model_config = ConfigDict(frozen=True)

    id: str
    tables: tuple[str, ...]
    label: str
    migration_file: str | None = None  # absent in units planned before it was passed along
    # the unit's tables' manifest entries (rule, structure, data member, columns, the source's
    # fingerprint without its row hashes: execute.unit_entries); None: absent in units planned
    # before they were passed along (read from the file then)
    entries: dict[str, Table] | None = None
    checked: frozenset[str] = frozenset()  # tables the plan found structurally equal
    # the drift guard: the unit's tables' fingerprints as the plan saw them (None: absent)
    fingerprints: dict[str, RowFingerprint | None] | None = None

    @field_serializer("checked")
    def _sorted(self, checked: frozenset[str]) -> list[str]:
        return sorted(checked)

    @property
    def unit(self) -> Unit:
        return Unit(id=self.id, tables=self.tables, label=self.label)


class PlannedTask(BaseModel):
    """One element of ``plan``'s return value: what one mapped ``apply_table`` applies, its
    units one after another (``plan.pack_units``), and its name in the UI (``label``).

    A task of one unit has that unit's label (``orders (upsert)``); a packed task lists its
    tables (``users, roles, +38 more``).
    """

    model_config = ConfigDict(frozen=True)

    units: tuple[PlannedUnit, ...]

    @model_validator(mode="before")
    @classmethod
    def _one_unit(cls, v: Any) -> Any:
        """A run planned before units were packed pushed one unit per task."""
        if isinstance(v, Mapping) and "units" not in v:
            return {"units": [v]}
        return v

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return task_label([p.unit for p in self.units])


def planned_tasks(
    plan: ExecutionPlan,
    tasks: Sequence[Sequence[Unit]],
    entries: Mapping[str, Mapping[str, Table]],
    migration_file: str,
) -> list[PlannedTask]:
    """``plan``'s return value: per task (``plan.pack_units``), what its units need and no more:
    their tables' entries (``entries`` by unit id: rule, structure, data member, columns), which
    of them the plan found structurally equal, and their fingerprints for the drift guard."""
    return [
        PlannedTask(
            units=tuple(
                PlannedUnit(
                    id=u.id,
                    tables=u.tables,
                    label=u.label,
                    migration_file=migration_file,
                    entries=dict(entries[u.id]),
                    checked=frozenset(u.tables) & plan.checked,
                    fingerprints=plan.unit_fingerprints(u),
                )
                for u in task
            )
        )
        for task in tasks
    ]
