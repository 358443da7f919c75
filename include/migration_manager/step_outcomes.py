"""What each step of a run did, as the run record keeps it: one model per kind of step.

A step's return value is read by its kind's model (:data:`OUTCOMES`, keyed by :class:`StepKind`);
what the model does not name is not kept, and a step of no known kind has no outcome in the
record. Environment variables appear by name and type only, never their values. Each model's
:meth:`StepOutcome.describe` puts the outcome in a few words for the log and the run page.

A model reads both a step's return value and what the record holds (``migration.json``), and
writes the record's keys only (``exclude_unset``): the record's shape is the one earlier versions
wrote.

The engine names the kinds; which task of a DAG is which kind is the Airflow adapter's business
(``migration_manager.airflow.run_log.STEP_KINDS``). In ``migration.json`` the kind's value is
the step's ``task_id`` and the key of its outcome under ``checks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ConfigDict, ValidationError, model_validator

from migration_manager.check_outcomes import (
    AppRestart,
    DestructiveCheck,
    EnvCheck,
    EnvValues,
    EnvWrite,
    PluginCheck,
)
from migration_manager.redaction import redact
from migration_manager.step_kinds import Part, Rollback, StepKind, StepOutcome, items

# --- the file, the plan, the backup, the units, the rollback ---------------------------------


class CreatedFile(StepOutcome):
    kind = StepKind.CREATE_FILE

    migration_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return v
        return {"migration_file": redact(str(v))} if v else {}

    def describe(self) -> str:
        return str(self.migration_file or "").rsplit("/", 1)[-1]


class Difference(Part):
    """A table the plan found work for: its rule and the structure changes to make (none: only
    rows). The run record keeps those with changes (the structure differences found)."""

    table: str | None = None
    rule: str | None = None
    changes: list[str] = []


class PlanOutcome(StepOutcome):
    """The plan's units (by label), the structure differences it found, and the tables changed
    in the target since the last migration whose rows the rule replaces. Made from the plan's
    report (``PlanReport.outcome``), or read from its return value (the units) or the record."""

    kind = StepKind.PLAN

    units: list[str] = []
    differences: list[Difference] = []
    unchanged: int = 0
    changed_in_prod: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        units = v.get("units") if isinstance(v, Mapping) else v
        out: dict[str, Any] = {
            "units": [
                u if isinstance(u, str) else (u.get("label") or u.get("id"))
                for u in units or []
                if isinstance(u, (str, Mapping))
            ]
        }
        if not isinstance(v, Mapping):
            return out
        out["differences"] = v.get("differences") or []
        out["unchanged"] = v.get("unchanged", 0)
        changed = [
            c if isinstance(c, str) else str(c.get("table")) for c in v.get("changed_in_prod") or []
        ]
        if changed:
            out["changed_in_prod"] = changed
        return out

    def describe(self) -> str:
        text = f"{len(self.units)} unit(s) to apply"
        if self.differences:
            text += f"; structure differences in {len(self.differences)} table(s)"
        if self.changed_in_prod:
            text += "; changed in prod since the last migration: " + ", ".join(self.changed_in_prod)
        return text


class BackupOutcome(StepOutcome):
    """The backup taken before the run's writes."""

    kind = StepKind.BACKUP

    backup_id: str | None = None
    uri: str | None = None
    target_key: str | None = None
    database: str | None = None
    size: int | None = None
    sha256: str | None = None
    tables: int | None = None
    rows: int | None = None

    def describe(self) -> str:
        return f"{self.backup_id}: {self.tables} tables, {self.rows} rows"


class UnitTable(Part):
    table: str | None = None
    rule: str | None = None
    status: str | None = None
    inserted: int | None = None
    updated: int | None = None
    deleted: int | None = None
    unchanged: int | None = None
    ddl: int = 0  # statements


class UnitOutcome(StepOutcome):
    """One ``apply_table`` unit: its tables' counts (the DDL by number of statements)."""

    kind = StepKind.APPLY_UNIT

    unit: str | None = None
    seconds: float | None = None
    tables: list[UnitTable] = []

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        keys = ("table", "rule", "status", "inserted", "updated", "deleted", "unchanged")
        tables = []
        for t in items(v.get("tables")):
            ddl = t.get("ddl")
            count = len(ddl) if isinstance(ddl, (list, tuple)) else int(ddl or 0)
            tables.append({k: t.get(k) for k in keys} | {"ddl": count})
        return {"unit": v.get("unit"), "seconds": v.get("seconds"), "tables": tables}

    def describe(self) -> str:
        return "; ".join(
            f"{t.table}: +{t.inserted or 0} ~{t.updated or 0} "
            f"-{t.deleted or 0} ={t.unchanged or 0} rows, {t.ddl} DDL"
            for t in self.tables
        )


class RollbackOutcome(StepOutcome):
    """Whether the target was rolled back to the backup after a unit failed, and why (not)."""

    kind = StepKind.ROLLBACK

    status: Rollback | None = None
    backup_id: str | None = None
    failed_units: int | None = None
    reason: str | None = None
    restore_by_hand: str | None = None
    tables_verified: int | None = None
    seconds: float | None = None

    def describe(self) -> str:
        return str(self.status or "") + (f" ({self.reason})" if self.reason else "")


class RestoreOutcome(StepOutcome):
    kind = StepKind.RESTORE

    backup_id: str | None = None
    mode: str | None = None
    database: str | None = None
    tables_verified: int | None = None
    seconds: float | None = None
    status: str | None = None


class OtherOutcome(StepOutcome):
    """An outcome recorded for a step of no known kind (kept as it was written)."""

    model_config = ConfigDict(extra="allow")


OUTCOMES: dict[StepKind, type[StepOutcome]] = {
    m.kind: m
    for m in (
        CreatedFile,
        EnvCheck,
        PlanOutcome,
        EnvValues,
        PluginCheck,
        DestructiveCheck,
        BackupOutcome,
        EnvWrite,
        UnitOutcome,
        RollbackOutcome,
        RestoreOutcome,
        AppRestart,
    )
    if m.kind is not None
}


KindOfOutcome = TypeVar("KindOfOutcome", bound=StepOutcome)


def outcome_of(kind: StepKind | None, value: object) -> StepOutcome | None:
    """What a step's return value says, for the record; None for a step of no known kind, or a
    value its kind's model cannot read."""
    model = OUTCOMES.get(kind) if kind is not None else None
    if model is not None and isinstance(value, model):  # made by the step's adapter
        return value
    if model is None or value is None or not isinstance(value, (Mapping, list, str)):
        return None
    try:
        return model.model_validate(value)
    except (AttributeError, TypeError, ValueError, ValidationError):
        return None


def outcome_as(model: type[KindOfOutcome], value: object) -> KindOfOutcome | None:
    """``value`` read as ``model``'s kind of outcome (None when it cannot be)."""
    if isinstance(value, model):
        return value
    found = outcome_of(model.kind, value)
    return found if isinstance(found, model) else None


def recorded(step: str | None, outcome: object) -> StepOutcome | None:
    """A recorded outcome (``migration.json``) read by the model of its step's kind."""
    if outcome is None or isinstance(outcome, StepOutcome):
        return outcome
    kind = StepKind.of(step)
    found = outcome_of(kind, outcome) if kind is not None else None
    if found is None and isinstance(outcome, Mapping):
        return OtherOutcome.model_validate(outcome)
    return found
