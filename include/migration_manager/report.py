"""A migration run's results: gather the units' results into one summary, print it as a table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from migration_manager.text_format import text_table


def summarize(report: Mapping[str, Any], results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Join the plan's report with the units' results; units without a result have failed."""
    # imported here: DAG files import this module (through the run log) and need no engine
    from migration_manager.execute.results import TableResult, UnitResult

    unit_results = [UnitResult.model_validate(r) for r in results if r]
    done = {r.unit for r in unit_results}
    failed = [u for u in report.get("units", []) if u["id"] not in done]
    tables: list[TableResult] = [t for r in unit_results for t in r.tables]
    tables += [TableResult.model_validate(t) for t in report.get("quiet_tables", [])]
    for unit in failed:
        for name in unit["tables"]:
            tables.append(
                TableResult(
                    table=name, rule=report.get("rules", {}).get(name, "?"), status="failed"
                )
            )
    tables.sort(key=lambda t: t.table)
    totals = {
        k: sum(getattr(t, k) for t in tables)
        for k in ("inserted", "updated", "deleted", "unchanged")
    }
    return {
        "migration_id": report.get("migration_id"),
        "migration_file": report.get("migration_file"),
        "status": "failed" if failed else "success",
        "failed_units": [{"id": u["id"], "tables": u["tables"]} for u in failed],
        "tables": [t.model_dump(mode="json") for t in tables],
        "totals": {**totals, "ddl": sum(len(t.ddl) for t in tables)},
        "warnings": list(report.get("warnings", [])),
    }


def format_summary(summary: Mapping[str, Any], *, only_changed: bool = False) -> str:
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
    for t in summary["tables"]:
        if only_changed and t["status"] in ("unchanged", "skipped"):
            continue
        rows.append(
            (
                t["table"],
                t["rule"],
                t["status"],
                str(t["inserted"]),
                str(t["updated"]),
                str(t["deleted"]),
                str(t["unchanged"]),
                str(len(t["ddl"])),
                f"{t['seconds']:.2f}",
            )
        )
    lines = text_table(rows, 3)
    totals = summary["totals"]
    lines.append(
        f"{len(summary['tables'])} tables, {summary['status']}: +{totals['inserted']} ~{totals['updated']} "
        f"-{totals['deleted']} ={totals['unchanged']} rows, {totals['ddl']} DDL statements"
    )
    return "\n".join(lines)
