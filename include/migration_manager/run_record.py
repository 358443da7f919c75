"""The run record, ``migration.json``: a typed model of everything known about one migration run.

:func:`migration_manager.run_record_build.build_record` makes it; :mod:`migration_manager.run_files`
writes it (with the text log and the SQL files made from it); the pages read it back with
:func:`read_record`.

The JSON document (format ``migration-manager-log`` version 1) keeps the shape earlier versions
wrote: a model is dumped with only the keys it was given (``exclude_unset``), so a key that an
earlier version left out stays out, and a record written by an earlier version reads back as it
was written. Every model forbids keys it does not know (the key sets never changed in version 1)
except the tables: :class:`migration_manager.table_result.TableResult`, the units' own model.
A change that is not compatible raises :data:`LOG_VERSION`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SerializeAsAny, model_validator

from migration_manager.step_kinds import StepOutcome
from migration_manager.step_outcomes import BackupOutcome, Difference, RollbackOutcome, recorded
from migration_manager.table_result import TableResult

LOG_FORMAT: Final = "migration-manager-log"
LOG_VERSION = 1

JsonObject = dict[str, JsonValue]


class Outcome(StrEnum):
    """How a run, or one of its units, ended."""

    SUCCESS = "success"
    FAILED = "failed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json_dict(self) -> dict[str, JsonValue]:
        """The JSON object as written: the keys this model was given, by their JSON names."""
        dumped: dict[str, JsonValue] = self.model_dump(
            mode="json", exclude_unset=True, by_alias=True
        )
        return dumped


class Endpoint(_Model):
    """A database of the run (source or target): where a connection points, never its password;
    for the source also what the migration file says about it."""

    conn_id: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    user: str | None = None
    error: str | None = None
    server_version: str | None = None
    app_version: str | None = None
    db_schema: str | None = Field(default=None, alias="schema")
    app_settings: JsonObject | None = None


class SignatureInfo(_Model):
    """Who signed the migration file (``signing.Signature``) and whether the run accepted it."""

    status: str | None = None
    signer: str | None = None
    key_id: str | None = None
    claimed_signer: str | None = None
    label: str | None = None
    allow_unsigned: bool = False
    accepted: bool = False
    shown: str | None = None  # the line the log and the run page print


class MigrationFileInfo(_Model):
    """The migration file the run applied; an unreadable file has ``error`` instead of the rest."""

    uri: str | None = None
    name: str | None = None
    error: str | None = None
    id: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    manifest_sha256: str | None = None
    created_at: str | None = None
    tool_version: str | None = None
    profile: str | None = None
    tables: int | None = None
    rows: int | None = None
    source: Endpoint | None = None
    signature: SignatureInfo | None = None


class StepRecord(_Model):
    """One step of the run as recorded: its status word, when, which attempt, its outcome."""

    task_id: str
    status: str
    map_index: int = -1
    label: str | None = None
    start: str | None = None
    end: str | None = None
    attempt: int | None = None
    outcome: SerializeAsAny[StepOutcome] | None = None  # read by the model of the step's kind
    error: str | None = None
    note: str | None = None
    name: str = ""
    seconds: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _outcome_by_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("outcome") is not None:
            return {**data, "outcome": recorded(data.get("task_id"), data["outcome"])}
        return data


class UnitRecord(_Model):
    """A unit of the plan (tables applied in one transaction) and how it ended."""

    id: str | None = None
    label: str
    tables: list[str] = []
    map_index: int
    status: Outcome


class FailedUnit(_Model):
    """A unit without a result: its transaction was rolled back."""

    id: str
    tables: list[str] = []


class Totals(_Model):
    """Rows inserted, updated, deleted and unchanged, and DDL statements, over every table."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    ddl: int = 0

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted


class RunRecord(_Model):
    """The whole record of a run (``migration.json``); a superset of the run summary."""

    format: Literal["migration-manager-log"] = LOG_FORMAT
    format_version: int = LOG_VERSION
    migration_id: str | None = None
    status: Outcome = Outcome.FAILED  # every key has a default: a record is read as far as it goes
    dag_id: str | None = None
    run_id: str | None = None
    run_type: str | None = None
    triggered_by: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    seconds: float | None = None
    migration_file: MigrationFileInfo | None = None
    source: Endpoint | None = None
    target: Endpoint | None = None
    params: JsonObject = {}
    steps: list[StepRecord] = []
    checks: dict[str, SerializeAsAny[StepOutcome]] = {}  # the checks' outcomes by step's kind
    backup: BackupOutcome | None = None
    rollback: RollbackOutcome | None = None
    units: list[UnitRecord] = []
    differences: list[Difference] = []
    tables: list[TableResult] = []
    totals: Totals = Totals()
    failed_units: list[FailedUnit] = []
    warnings: list[str] = []
    errors: list[str] = []
    dry_run: bool = False  # every unit was rolled back, nothing committed

    @model_validator(mode="before")
    @classmethod
    def _checks_by_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("checks"), Mapping):
            checks = {str(k): recorded(str(k), v) for k, v in data["checks"].items()}
            return {**data, "checks": {k: v for k, v in checks.items() if v is not None}}
        return data

    def to_json(self) -> str:
        """``migration.json``'s text (not yet redacted: :mod:`run_files` does that)."""
        return json.dumps(self.to_json_dict(), indent=1, default=str) + "\n"


class RunSummary(BaseModel):
    """What a run did, table by table: made by ``collect_logs`` from the plan's report and the
    units' results, then written as ``summary.json`` (with the run's backup and rollback)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    migration_id: str | None = None
    migration_file: str | None = None
    status: Outcome
    run_id: str | None = None
    failed_units: list[FailedUnit] = []
    tables: list[TableResult] = []
    totals: Totals = Totals()
    warnings: list[str] = []
    backup: BackupOutcome | None = None
    rollback: RollbackOutcome | None = None
    dry_run: bool = False


def read_record(text: str) -> RunRecord:
    """Parse ``migration.json``; ValueError when it is not a record of this format."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != LOG_FORMAT:
        raise ValueError("not a migration log record")
    return RunRecord.model_validate(data)


def endpoint(e: Endpoint | None) -> str:
    """``conn_id: user@host:port/database`` (no password), or the database name alone."""
    if e is None:
        return "-"
    where = e.database or "?"
    if e.host:
        port = f":{e.port}" if e.port else ""
        user = f"{e.user}@" if e.user else ""
        where = f"{user}{e.host}{port}/{where}"
    return f"{e.conn_id}: {where}" if e.conn_id else str(where)
