"""After a run: record each table's fingerprint as the migration left it, per target.

``collect_logs`` calls :func:`record_fingerprints` (the run's last writer, still under the
target lock). Recorded: the fingerprint each committed unit took of its data tables just before
its commit, and for data tables that needed no unit, the fingerprint the plan saw (the run left
them as they were). Not recorded: a dry run, a run rolled back to its backup, a failed unit's
tables (the next plan still compares them with the record before this run). The next plan
compares the target with this record (``PlanMigrationOperator``: ``changed_in_prod``).

``migration_rollback``'s restore calls :func:`record_restore`: the target is the backup again,
and the record says so (``prod_edits.after_restore``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from migration_manager.airflow.common import is_dry_run
from migration_manager.config import DATA_RULES

if TYPE_CHECKING:  # the engine is imported when a task runs, not when a DAG file is parsed
    from migration_manager.execute.results import UnitResult
    from migration_manager.fingerprint import RowFingerprint
    from migration_manager.plan_report import PlanReport

log = logging.getLogger(__name__)


def fingerprints_left(
    report: PlanReport, results: Iterable[UnitResult]
) -> dict[str, RowFingerprint | None]:
    """What the run left: committed units' fingerprints, the plan's for tables without a unit."""
    mapped = report.applied_tables
    out: dict[str, RowFingerprint | None] = {}
    for name, fp in report.target_fingerprints.items():
        if name not in mapped and report.rules.get(name) in DATA_RULES:
            out[name] = fp
    for result in results:
        out.update(result.fingerprints)
    return out


def record_fingerprints(
    context: Any,
    report: PlanReport | None,
    results: Iterable[UnitResult],
    *,
    rolled_back: bool,
) -> str | None:
    """Update ``targets/<target key>/fingerprints.json``; returns its path (None: not recorded)."""
    from migration_manager.airflow.store import load_target_record, save_target_record
    from migration_manager.prod_edits import TargetRecord

    if report is None or not report.target_key:
        return None
    if is_dry_run(context) or rolled_back:
        return None
    left = fingerprints_left(report, results)
    if not left:
        return None
    key = str(report.target_key)
    record = load_target_record(key) or TargetRecord(target_key=key)
    ti = context["ti"]
    run = f"{ti.dag_id}/{ti.run_id} (migration {report.migration_id})"
    path = save_target_record(record.updated(left, run))
    log.info("Recorded the fingerprints of %d table(s) as this run left them: %s", len(left), path)
    return str(path)


def record_restore(conn_id: str, dsn: str, schema: str, run: str) -> str | None:
    """After a restore in place: each recorded table's fingerprint as the restore left it.

    Returns the record's path; None when the target has no record (no migration recorded one).
    """
    from migration_manager import pg
    from migration_manager.airflow.store import load_target_record, save_target_record
    from migration_manager.prod_edits import after_restore, target_key

    with pg.connect(dsn) as conn:
        key = target_key(conn_id, pg.database_identity(conn))
        record = load_target_record(key)
        if record is None:
            return None
        with conn.cursor() as cur:
            updated = after_restore(cur, record, schema, run)
        conn.rollback()
    path = save_target_record(updated)
    log.info(
        "Recorded the fingerprints of %d table(s) as the restore left them: %s (the next "
        "migration finds prod edits against them)",
        len(updated.tables),
        path,
    )
    return str(path)
