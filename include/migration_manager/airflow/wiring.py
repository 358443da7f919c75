"""DAG building blocks shared by the DAG files: params, default args and the task chains.

The DAG files in ``dags/`` declare structure only and call these. Nothing here touches a
connection or the network at import time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException

from migration_manager.airflow.lock_operators import guard_target_writes, lock_params
from migration_manager.airflow.operators import (
    ApplyUnitOperator,
    CreateMigrationOperator,
    PlanMigrationOperator,
)
from migration_manager.airflow.run_log import STEP_HOOKS, write_run_log
from migration_manager.config import RULES
from migration_manager.pipelines import DEFAULT_POOL
from migration_manager.profiles import PROFILES
from migration_manager.report import format_summary, summarize

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "migration-manager",
    "retries": 2,
    "retry_delay": timedelta(seconds=15),
    **STEP_HOOKS,  # every task records its step (status, start, end, attempt) for collect_logs
}
TAGS = ["migration-manager"]

_INDEPENDENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": "string", "enum": list(RULES)},
}


def _group_schema(defaults: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "default": {"type": "string", "enum": defaults},
            "independent": _INDEPENDENT_SCHEMA,
        },
    }


DEFAULT_RULES = {
    "system": {"default": "profile", "independent": {}},
    "user": {"default": "schema-only", "independent": {}},
}


def create_params() -> dict[str, Param]:
    return {
        "source_conn_id": Param(
            "migration_source",
            type="string",
            title="Source connection",
            description="Airflow connection (postgres) of the environment to copy from, e.g. staging.",
        ),
        "profile": Param(
            "nocobase",
            type="string",
            enum=sorted(PROFILES),
            title="Application profile",
            description="nocobase: NocoBase's built-in tables and default rules; generic: every table is user-defined.",
        ),
        "rules": Param(
            DEFAULT_RULES,
            type="object",
            title="Migration rules",
            description=(
                "Default rule per group and independent rules per table. Rules: "
                + ", ".join(RULES)
                + '; system default may also be "profile" (each built-in table\'s own default).'
            ),
            schema={
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "system": _group_schema(["profile", *RULES]),
                    "user": _group_schema(list(RULES)),
                },
            },
        ),
    }


def execute_params(*, with_file: bool = True) -> dict[str, Param]:
    params: dict[str, Param] = {}
    if with_file:
        params["migration_file"] = Param(
            type="string",
            minLength=1,
            title="Migration file",
            description="URI returned by migration_create (or a file name in the migration store's files/ folder).",
        )
    params["target_conn_id"] = Param(
        "migration_target",
        type="string",
        title="Target connection",
        description="Airflow connection (postgres) of the environment to change, e.g. prod.",
    )
    params["allow_drop"] = Param(
        False,
        type="boolean",
        title="Drop what the source lacks",
        description="Also drop target columns, indexes and constraints that the source does not have (off: kept, with a warning).",
    )
    params.update(lock_params())
    return params


def create_task() -> CreateMigrationOperator:
    return CreateMigrationOperator(
        task_id="create_migration_file",
        source_conn_id="{{ params.source_conn_id }}",
        profile="{{ params.profile }}",
        rules="{{ params.rules | tojson }}",
    )


@task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
def collect_logs(results: Any, **context: Any) -> dict[str, Any]:
    """Write the run's log, whatever happened upstream; fail the run when any unit failed (or never ran).

    ``MIGRATION_STORE/logs/<migration id>/<run id>/``: migration.json, migration.log, schema.sql,
    data.sql and summary.json (see :mod:`migration_manager.logs`).
    """
    ti = context["ti"]
    report = ti.xcom_pull(task_ids="plan", key="report")
    results = [r for r in (results or []) if r]
    if not report:
        _, folder = write_run_log(
            context, report=None, summary=None, results=results, final_status="failed"
        )
        raise AirflowFailException(
            "The plan task produced no report: the migration did not start (see the failed "
            f"task's log); the run's log is in {folder}"
        )
    summary = summarize(report, results)
    run_id = context["run_id"]
    summary["run_id"] = run_id
    _, folder = write_run_log(
        context,
        report=report,
        summary=summary,
        results=results,
        final_status="success" if summary["status"] == "success" else "failed",
    )
    log.info("Migration %s\n%s", summary["migration_id"], format_summary(summary))
    log.info("Log written to %s (migration.log, migration.json, schema.sql, data.sql)", folder)
    if summary["status"] != "success":
        failed = "; ".join(", ".join(u["tables"]) for u in summary["failed_units"])
        raise AirflowFailException(
            f"{len(summary['failed_units'])} unit(s) failed: {failed}. Each failed unit was rolled back; "
            "fix the cause and clear the failed apply_table task(s) to retry them alone."
        )
    return {k: summary[k] for k in ("migration_id", "status", "totals", "run_id")} | {
        "log": str(folder)
    }


def execute_chain(migration_file: Any, *, pool: str = DEFAULT_POOL) -> Any:
    """plan -> apply_table (mapped, one per unit) -> collect."""
    plan = PlanMigrationOperator(
        task_id="plan",
        migration_file=migration_file,
        target_conn_id="{{ params.target_conn_id }}",
        allow_drop="{{ params.allow_drop }}",
        retries=1,
    )
    applied = ApplyUnitOperator.partial(
        task_id="apply_table",
        target_conn_id="{{ params.target_conn_id }}",
        allow_drop="{{ params.allow_drop }}",
        map_index_template="{{ task.unit['label'] }}",
        pool=pool,
    ).expand(unit=plan.output)
    done = collect_logs(applied.output)
    plan >> applied >> done
    guard_target_writes(plan, target_conn_id="{{ params.target_conn_id }}")
    return done
