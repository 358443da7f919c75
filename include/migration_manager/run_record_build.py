"""Building a run's record (:class:`~migration_manager.run_record.RunRecord`) from typed inputs.

The Airflow task ``collect_logs`` gathers the run (:class:`RunInfo`), one :class:`Step` per step,
the plan's report, the summary, the migration file (:func:`describe_file`), the checks' outcomes
and the backup, and calls :func:`build_record`; it is tested without Airflow.

**Secret values never appear**: step outcomes are allow-listed per kind
(:mod:`migration_manager.step_outcomes`), run parameters are recorded except ``env_values``'
values, and every text is redacted (:mod:`migration_manager.redaction`).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from migration_manager.archive import MANIFEST_SUM, ArchiveReader, Openable
from migration_manager.errors import ArchiveError
from migration_manager.redaction import redact
from migration_manager.run_record import (
    LOG_FORMAT,
    LOG_VERSION,
    Endpoint,
    JsonObject,
    MigrationFileInfo,
    Outcome,
    RunRecord,
    RunSummary,
    SignatureInfo,
    StepRecord,
    Totals,
    UnitRecord,
)
from migration_manager.signing import Signature, TrustedKey
from migration_manager.step_kinds import StepKind, StepOutcome
from migration_manager.step_outcomes import (
    BackupOutcome,
    RollbackOutcome,
    outcome_as,
    outcome_of,
)
from migration_manager.text_format import seconds_between, utc_iso

if TYPE_CHECKING:  # DAG files import this module; the plan's models need the engine
    from migration_manager.plan_report import PlanReport

_CHUNK = 1 << 20
_SOURCE_KEYS = ("database", "server_version", "app_version", "schema", "app_settings")


@dataclass(frozen=True)
class RunInfo:
    """The run as its scheduler knows it."""

    dag_id: str | None = None
    run_id: str | None = None
    run_type: str | None = None
    triggered_by: str | None = None
    start_date: datetime | str | None = None


@dataclass(frozen=True)
class Step:
    """One step of the run: what it was, how it ended, when, which attempt, its outcome.

    ``status`` is the word the record shows (the scheduler's state); ``failed`` says whether the
    step failed or could not run because another did (a skipped step has not failed).
    """

    task_id: str  # the step's name (the record's format calls it task_id)
    status: str
    map_index: int = -1
    label: str | None = None  # the map index's name (a unit: its tables)
    start: str | None = None
    end: str | None = None
    attempt: int | None = None
    outcome: StepOutcome | None = None
    error: str | None = None
    note: str | None = None  # why a step was skipped, and the like
    failed: bool = False

    @property
    def name(self) -> str:
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id}[{self.label or self.map_index}]"

    @property
    def seconds(self) -> float | None:
        return seconds_between(self.start, self.end)

    def to_record(self) -> StepRecord:
        return StepRecord(
            task_id=self.task_id,
            status=self.status,
            map_index=self.map_index,
            label=self.label,
            start=self.start,
            end=self.end,
            attempt=self.attempt,
            outcome=self.outcome,
            error=redact(self.error) if self.error else None,
            note=redact(self.note) if self.note else None,
            name=self.name,
            seconds=self.seconds,
        )


def safe_params(params: Mapping[str, Any]) -> JsonObject:
    """The run's params for the log: ``env_values`` by name only (its values may be secrets)."""
    out: JsonObject = {}
    for key, value in sorted(params.items()):
        if key == "env_values":
            names = sorted(str(k) for k in value) if isinstance(value, Mapping) else []
            out[key] = list[JsonValue](names)
        elif isinstance(value, (str, int, float, bool, type(None), list, dict)):
            out[key] = json.loads(redact(json.dumps(value, default=str)))
    return out


# --- the migration file ------------------------------------------------------------------


def describe_signature(signature: Signature, *, allow_unsigned: bool) -> SignatureInfo:
    """Who signed the file (the *trusted* key's name), or that it ran unsigned under allow_unsigned.

    ``shown`` is the line the log and the run page print; ``accepted`` says whether the run's
    tasks let the file through (signed by a trusted key, or ``allow_unsigned`` set).
    """
    accepted = signature.status == "verified" or allow_unsigned
    if signature.status == "verified":
        shown = f"signed by {signature.signer} (trusted key {signature.key_id})"
    elif allow_unsigned:
        shown = f"{signature.label}; accepted because allow_unsigned is set"
    else:
        shown = f"{signature.label}; not accepted (allow_unsigned is off)"
    return SignatureInfo(
        **signature.model_dump(),
        allow_unsigned=allow_unsigned,
        accepted=accepted,
        shown=redact(shown),
    )


def unreadable_file(ref: str, error: str, *, name: str | None = None) -> MigrationFileInfo:
    """A migration file that could not be found or read, described by the error."""
    return MigrationFileInfo(
        uri=redact(ref), name=name or ref.rstrip("/").rsplit("/", 1)[-1], error=redact(error)
    )


def describe_file(
    path: Openable,
    *,
    uri: str | None = None,
    keys: tuple[TrustedKey, ...] | None = None,
    allow_unsigned: bool = False,
) -> MigrationFileInfo:
    """The migration file as the log names it: id, sha256 and size of the file, manifest checksum,
    and its signature checked against ``keys`` (the trusted keys; None: not checked).

    Reads the whole file once (streamed) for its sha256; a file that cannot be read is
    described by the error instead.
    """
    label = uri or str(path)
    try:
        sha = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
            fh.seek(0)
            with ArchiveReader(fh, name=label) as reader:  # checks the format and manifest checksum
                manifest = reader.manifest
                signature = reader.signature_against(keys) if keys is not None else reader.signature
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                manifest_sha = zf.read(MANIFEST_SUM).decode("ascii").strip()
    except (ArchiveError, OSError, zipfile.BadZipFile) as exc:
        return unreadable_file(label, str(exc))
    source = manifest.source
    return MigrationFileInfo(
        uri=redact(label),
        name=label.rstrip("/").rsplit("/", 1)[-1],
        id=manifest.id,
        sha256=sha.hexdigest(),
        bytes=size,
        manifest_sha256=manifest_sha,
        created_at=manifest.created_at,
        tool_version=manifest.tool_version,
        profile=manifest.profile,
        tables=len(manifest.tables),
        rows=sum(t.data.rows for t in manifest.tables if t.data is not None),
        source=Endpoint.model_validate(
            {
                "database": source.database,
                "server_version": source.server_version,
                "app_version": source.app_version,
                "schema": source.schema_,
                "app_settings": dict(source.app_settings),
            }
        ),
        signature=describe_signature(signature, allow_unsigned=allow_unsigned),
    )


# --- the record ---------------------------------------------------------------------------


def _step_sort_key(order: Mapping[str, int]) -> Callable[[Step], tuple[Any, ...]]:
    def key(s: Step) -> tuple[Any, ...]:
        # the DAG's order first (steps that never ran stay where they belong), then start time
        return (order.get(s.task_id, len(order)), s.start is None, s.start or "", s.map_index)

    return key


def _units(summary: RunSummary | None, report: PlanReport | None) -> list[UnitRecord]:
    """The plan's units in apply order (tables referenced-first), with how each ended."""
    if report is None:
        return []
    failed = {u.id for u in summary.failed_units} if summary else set()
    # the apply_table map index of each unit: units are packed into tasks (the report's tasks)
    task_of = {unit_id: i for i, ids in enumerate(report.tasks) for unit_id in ids}
    return [
        UnitRecord(
            id=u.id,
            label=u.label or ", ".join(u.tables),
            tables=list(u.tables),
            map_index=task_of.get(u.id, i),
            status=Outcome.FAILED if u.id in failed else Outcome.SUCCESS,
        )
        for i, u in enumerate(report.units)
    ]


def build_record(
    *,
    run: RunInfo,
    steps: Sequence[Step],
    report: PlanReport | None = None,
    summary: RunSummary | None = None,
    migration_file: MigrationFileInfo | None = None,
    source: Endpoint | None = None,
    target: Endpoint | None = None,
    params: Mapping[str, Any] | None = None,
    checks: Mapping[StepKind, Any] | None = None,
    backup: object = None,
    rollback: object = None,
    step_order: Sequence[str] = (),
    ended_at: datetime | str | None = None,
    errors: Sequence[str] = (),
    dry_run: bool | None = None,
) -> RunRecord:
    """The whole record of a run (``migration.json``); a superset of the run summary.

    :param steps: one :class:`Step` per step of the run
    :param report: the plan's report (None when the run stopped before the plan)
    :param summary: :func:`migration_manager.report.summarize` of the report and unit results
    :param checks: the checks' return values by kind (summarised here, values dropped)
    :param step_order: the steps' names in the order they run (steps sort by it, then by start)
    :param dry_run: recorded when given (every unit was rolled back)
    """
    order = {t: i for i, t in enumerate(step_order)}
    steps = sorted(steps, key=_step_sort_key(order))
    records = [s.to_record() for s in steps]
    status = Outcome.SUCCESS
    if summary is None or summary.status != Outcome.SUCCESS or any(s.failed for s in steps):
        status = Outcome.FAILED
    starts = [r.start for r in records if r.start]
    ends = [r.end for r in records if r.end]
    started_at = utc_iso(run.start_date) or (min(starts) if starts else None)
    ended = utc_iso(ended_at) or (max(ends) if ends else None)
    all_errors = [redact(e) for e in errors]
    all_errors += [f"{s.name}: {redact(s.error)}" for s in steps if s.error and s.failed]
    migration_id = (
        (summary.migration_id if summary else None)
        or (report.migration_id if report else None)
        or (migration_file.id if migration_file else None)
    )
    summarised_checks: dict[str, StepOutcome] = {
        str(kind): outcome
        for kind, value in (checks or {}).items()
        if (outcome := outcome_of(kind, value)) is not None
    }
    file_source = migration_file.source if migration_file else None
    extra = {"dry_run": dry_run} if dry_run is not None else {}
    return RunRecord(
        format=LOG_FORMAT,
        format_version=LOG_VERSION,
        migration_id=migration_id,
        status=status,
        dag_id=run.dag_id,
        run_id=run.run_id,
        run_type=run.run_type,
        triggered_by=run.triggered_by,
        started_at=started_at,
        ended_at=ended,
        seconds=seconds_between(started_at, ended),
        migration_file=migration_file,
        source=source or file_source or None,
        target=target or None,
        params=safe_params(params or {}),
        steps=records,
        checks=summarised_checks,
        backup=outcome_as(BackupOutcome, backup) if backup else None,
        rollback=outcome_as(RollbackOutcome, rollback) if rollback else None,
        units=_units(summary, report),
        differences=report.outcome().differences if report else [],
        tables=list(summary.tables) if summary else [],
        totals=summary.totals
        if summary
        else Totals(inserted=0, updated=0, deleted=0, unchanged=0, ddl=0),
        failed_units=list(summary.failed_units) if summary else [],
        warnings=[redact(w) for w in summary.warnings] if summary else [],
        errors=all_errors,
        **extra,
    )
