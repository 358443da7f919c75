"""What crosses XCom between the tasks of a migration run, as frozen dataclasses.

Each model has one (de)serialisation layer: ``to_xcom()`` gives the JSON-able form XCom carries
(the form the run log, the pages and earlier runs' XComs know), ``from_xcom()`` reads it back
(tolerating keys absent in XComs of older runs). The engine's own dataclasses are reused:
:class:`migration_manager.plan.Unit`, :class:`migration_manager.execute.TableResult` and
``UnitResult``, :class:`migration_manager.fingerprint.RowFingerprint`,
:class:`migration_manager.prod_edits.Changed`, :class:`migration_manager.destructive.DestructivePlan`.

Imported when a task runs (the engine types it uses import SQLAlchemy), never by a DAG file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migration_manager.destructive import DestructivePlan
from migration_manager.execute.results import ExecutionPlan, TableResult, UnitResult
from migration_manager.fingerprint import RowFingerprint
from migration_manager.plan import Unit, task_label
from migration_manager.prod_edits import Changed

# a table's manifest entry, and a fingerprint, as XCom carries them
Entry = Mapping[str, Any]
Json = dict[str, Any]  # a JSON document as it crosses XCom
FingerprintJson = Mapping[str, Any]

__all__ = ["DestructiveOutcome", "PlanReport", "PlannedTask", "PlannedUnit", "UnitResult"]


def _fingerprints(d: Mapping[str, FingerprintJson | None]) -> dict[str, RowFingerprint | None]:
    return {
        t: (RowFingerprint.model_validate(fp) if fp is not None else None) for t, fp in d.items()
    }


@dataclass(frozen=True)
class PlanReport:
    """``plan``'s report (XCom key ``report``): what the run will do, for the checks and the log."""

    migration_id: str
    migration_file: str
    source: str | None
    units: tuple[Unit, ...]
    rules: Mapping[str, str]  # table -> rule, every table of the file
    quiet_tables: tuple[TableResult, ...] = ()  # tables needing no unit, with the reason
    warnings: tuple[str, ...] = ()
    # per table with work to do: rule and the structure differences found (for the log)
    pending: tuple[Mapping[str, Any], ...] = ()
    # the target as the plan saw it: recorded after the run, checked by each unit
    target_key: str | None = None
    target_fingerprints: Mapping[str, RowFingerprint | None] = field(default_factory=dict)
    # tables changed in the target since the last migration, whose rows the rule would replace
    changed_in_prod: tuple[Changed, ...] = ()
    # the units' ids of each mapped apply_table, by map index (empty: one task per unit)
    tasks: tuple[tuple[str, ...], ...] = ()

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

    def to_xcom(self) -> Json:
        return {
            "migration_id": self.migration_id,
            "migration_file": self.migration_file,
            "source": self.source,
            "units": [u.model_dump(mode="json") for u in self.units],
            "rules": dict(self.rules),
            "quiet_tables": [t.model_dump(mode="json") for t in self.quiet_tables],
            "warnings": list(self.warnings),
            "pending": [dict(p) for p in self.pending],
            "target_key": self.target_key,
            "target_fingerprints": {
                t: (fp.model_dump(exclude_none=True) if fp is not None else None)
                for t, fp in self.target_fingerprints.items()
            },
            "changed_in_prod": [c.model_dump(mode="json") for c in self.changed_in_prod],
            "tasks": [list(ids) for ids in self.tasks],
        }

    @classmethod
    def from_xcom(cls, d: Mapping[str, Any]) -> PlanReport:
        return cls(
            migration_id=str(d.get("migration_id") or ""),
            migration_file=str(d.get("migration_file") or ""),
            source=d.get("source"),
            units=tuple(Unit.model_validate(u) for u in d.get("units") or ()),
            rules=dict(d.get("rules") or {}),
            quiet_tables=tuple(TableResult.model_validate(t) for t in d.get("quiet_tables") or ()),
            warnings=tuple(d.get("warnings") or ()),
            pending=tuple(dict(p) for p in d.get("pending") or ()),
            target_key=d.get("target_key"),
            target_fingerprints=_fingerprints(d.get("target_fingerprints") or {}),
            changed_in_prod=tuple(
                Changed.model_validate(c) for c in d.get("changed_in_prod") or ()
            ),
            tasks=tuple(tuple(ids) for ids in d.get("tasks") or ()),
        )

    @classmethod
    def from_optional(cls, d: Mapping[str, Any] | None) -> PlanReport | None:
        """The report, or None when the plan pushed none (it failed, or never ran)."""
        return cls.from_xcom(d) if d else None


@dataclass(frozen=True)
class PlannedUnit:
    """One element of ``plan``'s return value: what one mapped ``apply_table`` applies.

    Its XCom form is the unit's own (``id``, ``tables``, ``label``: the map index's label) plus
    the fields below, so that clearing one map index applies exactly that unit again.
    """

    unit: Unit
    migration_file: str | None = None  # absent in units planned before it was passed along
    # the unit's tables' manifest entries (rule, structure, data member, columns, the source's
    # fingerprint without its row hashes); None: absent in units planned before they were
    # passed along (read from the file then)
    entries: Mapping[str, Entry] | None = None
    checked: frozenset[str] = frozenset()  # tables the plan found structurally equal
    # the drift guard: the unit's tables' fingerprints as the plan saw them (None: absent)
    fingerprints: Mapping[str, FingerprintJson | None] | None = None

    def to_xcom(self) -> Json:
        return {
            **self.unit.model_dump(mode="json"),
            "migration_file": self.migration_file,
            "entries": None
            if self.entries is None
            else {k: dict(v) for k, v in self.entries.items()},
            "checked": sorted(self.checked),
            "fingerprints": None if self.fingerprints is None else dict(self.fingerprints),
        }

    @classmethod
    def from_xcom(cls, d: Mapping[str, Any]) -> PlannedUnit:
        return cls(
            unit=Unit.model_validate({k: d[k] for k in ("id", "tables", "label")}),
            migration_file=d.get("migration_file"),
            entries=d.get("entries"),
            checked=frozenset(d.get("checked") or ()),
            fingerprints=d.get("fingerprints"),
        )


@dataclass(frozen=True)
class PlannedTask:
    """One element of ``plan``'s return value: what one mapped ``apply_table`` applies, its
    units one after another (``plan.pack_units``), and its name in the UI (``label``).

    A task of one unit has that unit's label (``orders (upsert)``); a packed task lists its
    tables (``users, roles, +38 more``).
    """

    units: tuple[PlannedUnit, ...]

    @property
    def label(self) -> str:
        return task_label([p.unit for p in self.units])

    def to_xcom(self) -> Json:
        return {"label": self.label, "units": [p.to_xcom() for p in self.units]}

    @classmethod
    def from_xcom(cls, d: Mapping[str, Any]) -> PlannedTask:
        if "units" not in d:  # a run planned before units were packed: one unit per task
            return cls(units=(PlannedUnit.from_xcom(d),))
        return cls(units=tuple(PlannedUnit.from_xcom(u) for u in d["units"]))


def planned_tasks(
    plan: ExecutionPlan,
    tasks: Sequence[Sequence[Unit]],
    entries: Mapping[str, Mapping[str, Entry]],
    migration_file: str,
) -> list[PlannedTask]:
    """``plan``'s return value: per task (``plan.pack_units``), what its units need and no more:
    their tables' entries (``entries`` by unit id: rule, structure, data member, columns), which
    of them the plan found structurally equal, and their fingerprints for the drift guard."""
    return [
        PlannedTask(
            units=tuple(
                PlannedUnit(
                    unit=u,
                    migration_file=migration_file,
                    entries=entries[u.id],
                    checked=frozenset(u.tables) & plan.checked,
                    fingerprints=plan.unit_fingerprints(u),
                )
                for u in task
            )
        )
        for task in tasks
    ]


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
