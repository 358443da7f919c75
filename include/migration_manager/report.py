"""A migration run's results: the plan's report and the units' results gathered into one
:class:`~migration_manager.run_record.RunSummary`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from migration_manager.run_record import FailedUnit, Outcome, RunSummary, Totals
from migration_manager.table_result import TableResult

if TYPE_CHECKING:
    from migration_manager.execute.results import UnitResult
    from migration_manager.plan_report import PlanReport


def summarize(report: PlanReport, results: Iterable[UnitResult]) -> RunSummary:
    """Join the plan's report with the units' results; units without a result have failed."""
    unit_results = list(results)
    done = {r.unit for r in unit_results}
    failed = [u for u in report.units if u.id not in done]
    tables: list[TableResult] = [t for r in unit_results for t in r.tables]
    tables += report.quiet_tables
    for unit in failed:
        for name in unit.tables:
            tables.append(
                TableResult(table=name, rule=report.rules.get(name, "?"), status="failed")
            )
    tables.sort(key=lambda t: t.table)
    totals = {
        k: sum(getattr(t, k) for t in tables)
        for k in ("inserted", "updated", "deleted", "unchanged")
    }
    return RunSummary(
        migration_id=report.migration_id,
        migration_file=report.migration_file,
        status=Outcome.FAILED if failed else Outcome.SUCCESS,
        failed_units=[FailedUnit(id=u.id, tables=list(u.tables)) for u in failed],
        # every key of each table in summary.json and the record (they are dumped exclude_unset)
        tables=[TableResult.model_validate(t.model_dump()) for t in tables],
        totals=Totals(**totals, ddl=sum(len(t.ddl) for t in tables)),
        warnings=list(report.warnings),
    )
