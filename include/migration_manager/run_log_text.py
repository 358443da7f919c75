"""``migration.log``: a run's record as text a person reads from top to bottom.

The head (run, file, signature, source, target, times, backup, rollback, params), the steps as
a table, the checks, the differences the plan found, the tables, sample keys, warnings and
errors. Every line is redacted before it is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TypeVar

from migration_manager.check_outcomes import (
    AppRestart,
    EnvCheck,
    EnvValues,
    EnvWrite,
    PluginCheck,
)
from migration_manager.redaction import redact
from migration_manager.run_record import RunRecord, RunSummary, endpoint
from migration_manager.step_kinds import StepOutcome
from migration_manager.table_result import TableResult
from migration_manager.text_format import clock, size, text_table, when

Kind = TypeVar("Kind", bound=StepOutcome)

SAMPLE_KINDS = (
    ("inserted", "inserted_keys"),
    ("updated", "updated_keys"),
    ("deleted", "deleted_keys"),
)


def sample_keys(table: TableResult) -> list[tuple[str, list[str]]]:
    """A table's sample keys by kind (``inserted``, ``updated``, ``deleted``), kinds with none left out."""
    found = [(kind, list(getattr(table, f))) for kind, f in SAMPLE_KINDS]
    return [(kind, keys) for kind, keys in found if keys]


def sample_key_lines(tables: Iterable[TableResult]) -> list[str]:
    """One line per table and kind: ``uiSchemas deleted (3 of 63): a, b, c``."""
    lines = []
    for t in tables:
        for kind, keys in sample_keys(t):
            lines.append(
                f"{t.table} {kind} ({len(keys)} of {getattr(t, kind, 0)}): {', '.join(keys)}"
            )
    return lines


def format_summary(summary: RunSummary, *, only_changed: bool = False) -> str:
    """A plain-text table: table, rule, status, rows inserted/updated/deleted/unchanged, DDL, seconds."""
    header = (
        "table",
        "rule",
        "status",
        "inserted",
        "updated",
        "deleted",
        "unchanged",
        "ddl",
        "seconds",
    )
    rows = [header]
    for t in summary.tables:
        if only_changed and t.status in ("unchanged", "skipped"):
            continue
        rows.append(
            (
                t.table,
                t.rule,
                t.status,
                str(t.inserted),
                str(t.updated),
                str(t.deleted),
                str(t.unchanged),
                str(len(t.ddl)),
                f"{t.seconds:.2f}",
            )
        )
    lines = text_table(rows, 3)
    totals = summary.totals
    lines.append(
        f"{len(summary.tables)} tables, {summary.status}: +{totals.inserted} ~{totals.updated} "
        f"-{totals.deleted} ={totals.unchanged} rows, {totals.ddl} DDL statements"
    )
    return "\n".join(lines)


def _check(checks: Mapping[str, StepOutcome], model: type[Kind]) -> Kind | None:
    found = checks.get(str(model.kind))
    return found if isinstance(found, model) else None


def check_lines(checks: Mapping[str, StepOutcome]) -> list[str]:
    """The checks' outcomes (the record's ``checks``), one line each."""
    lines = []
    env = _check(checks, EnvCheck)
    if env is not None:
        settings = ", ".join(f"{k}={v!r}" for k, v in env.settings.items())
        lines.append(f"  App settings      match ({settings or 'none checked'})")
        versions = env.versions
        if versions and versions.differences:
            lines.append(
                f"  Versions          differ, allowed by allow_version_mismatch: {versions.describe()}"
            )
        elif versions:
            lines.append(
                f"  Versions          match (application {versions.source_version or 'none'}, "
                "every plugin enabled on both sides)"
            )
        if env.missing_env:
            lines.append(
                "  Env variables     the target lacked "
                + ", ".join(f"{m.name} ({m.type})" for m in env.missing_env)
            )
        else:
            lines.append("  Env variables     the target had every variable the source has")
    values = _check(checks, EnvValues)
    if values and values.supplied:
        by = f" by {values.answered_by}" if values.answered_by else ""
        lines.append(
            "  Values supplied   "
            + ", ".join(f"{v.name} ({v.type})" for v in values.supplied)
            + f" from the {values.source}{by} (values not recorded)"
        )
    plugins = _check(checks, PluginCheck)
    if plugins is not None:
        if plugins.missing:
            by = f" by {plugins.decided_by}" if plugins.decided_by else ""
            lines.append(
                "  Plugins           missing in the target: "
                + ", ".join(str(p.name) for p in plugins.missing)
                + f"; decision: {plugins.decision}{by}"
            )
        else:
            lines.append("  Plugins           every plugin enabled in the source is enabled")
    written = _check(checks, EnvWrite)
    if written and written.written:
        lines.append("  Env written       " + ", ".join(written.written))
    restart = _check(checks, AppRestart)
    if restart is not None:
        lines.append("  App restart       " + restart.describe())
    return lines


def _head(record: RunRecord) -> list[str]:
    f = record.migration_file
    head = f"Migration {record.migration_id or '(no migration file)'}: {str(record.status).upper()}"
    if record.dry_run:
        head += " (DRY RUN: every unit rolled back, nothing committed)"
    lines = [head, "=" * len(head)]
    trig = record.triggered_by or "-"
    lines.append(
        f"Run         {record.run_id} of {record.dag_id} "
        f"({record.run_type or '-'}, triggered by {trig})"
    )
    if f:
        if f.sha256:
            detail = f"sha256 {f.sha256}, {size(f.bytes)}"
            if f.created_at:
                detail += f", created {f.created_at}"
        else:
            detail = f"unreadable: {f.error}"
        lines.append(f"File        {f.name} ({detail})")
        if f.signature:
            lines.append(f"Signature   {f.signature.shown}")
    source = record.source
    if source and source.to_json_dict():
        extra = []
        if source.server_version:
            extra.append(f"PostgreSQL {source.server_version}")
        if source.app_version:
            extra.append(f"app {source.app_version}")
        lines.append(
            f"Source      {endpoint(source)}{' (' + ', '.join(extra) + ')' if extra else ''}"
        )
    lines.append(f"Target      {endpoint(record.target)}")
    secs = record.seconds
    lines.append(
        f"Started     {when(record.started_at)}; ended {when(record.ended_at)}"
        + (f" ({secs:.1f} s)" if secs is not None else "")
    )
    backup = record.backup
    if backup:
        lines.append(
            f"Backup      {backup.backup_id} ({backup.tables} tables, "
            f"{backup.rows} rows, {size(backup.size)})"
        )
    else:
        lines.append("Backup      none taken")
    rollback = record.rollback
    if rollback:
        lines.append(
            f"Rollback    {rollback.status}"
            + (f" to {rollback.backup_id}" if rollback.backup_id else "")
            + (f" ({rollback.reason})" if rollback.reason else "")
        )
    if record.params:
        lines.append("Params      " + json.dumps(record.params, sort_keys=True))
    return lines


def _process(record: RunRecord) -> list[str]:
    rows: list[tuple[str, ...]] = [
        ("#", "step", "status", "try", "start", "end", "seconds", "outcome")
    ]
    for i, s in enumerate(record.steps, 1):
        rows.append(
            (
                str(i),
                s.name,
                s.status,
                str(s.attempt or "-"),
                clock(s.start),
                clock(s.end),
                f"{s.seconds:.2f}" if s.seconds is not None else "-",
                (s.outcome.describe() if s.outcome else "") or s.note or "",
            )
        )
    lines = ["  " + line for line in text_table(rows, 4, left_last=True)]
    lines += [f"  ! {s.name}: {s.error}" for s in record.steps if s.error]
    return lines


def format_log(record: RunRecord) -> str:
    """``migration.log``: the record as text a person reads from top to bottom."""
    lines = _head(record)
    lines += ["", "Process", "-------", *_process(record)]

    checks = check_lines(record.checks)
    if checks:
        lines += ["", "Checks", "------", *checks]

    if record.differences:
        lines += ["", "Differences found by the plan", "-----------------------------"]
        for d in record.differences:
            lines.append(f"  {d.table} ({d.rule}):")
            lines += [f"    - {c}" for c in d.changes]

    lines += ["", "Tables", "------"]
    if record.tables:
        summary = RunSummary(tables=record.tables, totals=record.totals, status=record.status)
        lines += ["  " + line for line in format_summary(summary).splitlines()]
    else:
        lines.append("  no table was planned (the run stopped before the plan)")
    samples = sample_key_lines(record.tables)
    if samples:
        lines += ["", "Sample keys (up to 20 per kind)", "-------------------------------"]
        lines += ["  " + line for line in samples]
    for unit in record.failed_units:
        lines.append(f"  ! failed unit {unit.id}: {', '.join(unit.tables)} (rolled back)")
    if record.warnings:
        lines += ["", "Warnings", "--------", *(f"  - {w}" for w in record.warnings)]
    if record.errors:
        lines += ["", "Errors", "------", *(f"  - {e}" for e in record.errors)]
    return redact("\n".join(lines)) + "\n"
