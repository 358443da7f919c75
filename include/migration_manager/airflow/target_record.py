"""After a run: record each table's fingerprint as the migration left it, per target.

``collect_logs`` calls :func:`record_fingerprints` (the run's last writer, still under the
target lock). Recorded: the fingerprint each committed unit took of its data tables just before
its commit, and for data tables that needed no unit, the fingerprint the plan saw (the run left
them as they were). Not recorded: a dry run, a run rolled back to its backup, a failed unit's
tables (the next plan still compares them with the record before this run). The next plan
compares the target with this record (``PlanMigrationOperator``: ``changed_in_prod``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from migration_manager.config import DATA_RULES

if TYPE_CHECKING:  # the engine is imported when a task runs, not when a DAG file is parsed
    from migration_manager.fingerprint import RowFingerprint

log = logging.getLogger(__name__)


def fingerprints_left(
    report: Mapping[str, Any], results: Iterable[Mapping[str, Any]]
) -> dict[str, RowFingerprint | None]:
    """What the run left: committed units' fingerprints, the plan's for tables without a unit."""
    from migration_manager.fingerprint import RowFingerprint

    rules = report.get("rules") or {}
    mapped = {t for u in report.get("units") or [] for t in u.get("tables") or []}
    out: dict[str, RowFingerprint | None] = {}
    for name, fp in (report.get("target_fingerprints") or {}).items():
        if name not in mapped and rules.get(name) in DATA_RULES:
            out[name] = RowFingerprint.from_dict(fp) if fp is not None else None
    for result in results:
        for name, fp in (result.get("fingerprints") or {}).items():
            out[name] = RowFingerprint.from_dict(fp) if fp is not None else None
    return out


def record_fingerprints(
    context: Mapping[str, Any],
    report: Mapping[str, Any] | None,
    results: Iterable[Mapping[str, Any]],
    *,
    rolled_back: bool,
) -> str | None:
    """Update ``targets/<target key>/fingerprints.json``; returns its path (None: not recorded)."""
    from migration_manager.airflow.operators import _as_bool
    from migration_manager.airflow.store import load_target_record, save_target_record
    from migration_manager.prod_edits import TargetRecord

    if not report or not report.get("target_key"):
        return None
    if _as_bool(context["params"].get("dry_run", False)) or rolled_back:
        return None
    left = fingerprints_left(report, results)
    if not left:
        return None
    key = str(report["target_key"])
    record = load_target_record(key) or TargetRecord(key)
    ti = context["ti"]
    run = f"{ti.dag_id}/{ti.run_id} (migration {report.get('migration_id')})"
    path = save_target_record(record.updated(left, run))
    log.info("Recorded the fingerprints of %d table(s) as this run left them: %s", len(left), path)
    return str(path)
