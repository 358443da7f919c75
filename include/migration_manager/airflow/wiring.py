"""DAG building blocks shared by the DAG files: default args and the task chains (the params
are in :mod:`migration_manager.airflow.params`).

The DAG files in ``dags/`` declare structure only and call these. Nothing here touches a
connection or the network at import time.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from airflow.sdk import TriggerRule, XComArg, task
from airflow.sdk.exceptions import AirflowFailException

from migration_manager.airflow import task_ids
from migration_manager.airflow.app_operators import AppRestartOperator, EnvWriteOperator
from migration_manager.airflow.backup_operators import (
    BackupOperator,
    RestoreBackupOperator,
    RollbackOperator,
)
from migration_manager.airflow.check_operators import (
    EnvCheckOperator,
    EnvValuesOperator,
    PluginCheckOperator,
)
from migration_manager.airflow.common import plan_report_xcom, rollback_outcome
from migration_manager.airflow.destructive_operators import DestructiveCheckOperator
from migration_manager.airflow.lock_operators import guard_target_writes
from migration_manager.airflow.notify import OUTCOME_KEY, MigrationNotifier, run_outcome
from migration_manager.airflow.operators import (
    ApplyUnitOperator,
    CreateMigrationOperator,
    PlanMigrationOperator,
)
from migration_manager.airflow.retention import finish_run, lease_file
from migration_manager.airflow.run_log import STEP_HOOKS, step_failed, write_run_log
from migration_manager.airflow.target_record import record_fingerprints
from migration_manager.airflow.xcom_models import Json
from migration_manager.check_outcomes import AppRestart
from migration_manager.notifications import QUESTION
from migration_manager.pipelines import DEFAULT_POOL
from migration_manager.run_record import Outcome
from migration_manager.step_kinds import Rollback
from migration_manager.step_outcomes import BackupOutcome, RollbackOutcome, outcome_as

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "migration-manager",
    "retries": 2,
    "retry_delay": timedelta(seconds=15),
    **STEP_HOOKS,  # every task records its step (status, start, end, attempt) for collect_logs
}
TAGS = ["migration-manager"]

ANSWER_TIMEOUT_ENV = "MM_ANSWER_TIMEOUT_HOURS"


def answer_timeout() -> timedelta | None:
    """How long a question (missing env values, missing plugins) waits for an answer before the
    run stops: ``MM_ANSWER_TIMEOUT_HOURS`` (default 24; 0 waits forever). A nightly sync nobody
    answers then fails the next morning instead of holding the target's lock for good."""
    raw = os.environ.get(ANSWER_TIMEOUT_ENV, "24").strip()
    try:
        hours = float(raw)
    except ValueError:
        raise ValueError(
            f"{ANSWER_TIMEOUT_ENV}={raw!r} is not a number of hours; set it to e.g. 24, or 0 to wait forever"
        ) from None
    return timedelta(hours=hours) if hours > 0 else None


def create_task(*, sync: bool = False) -> CreateMigrationOperator:
    """The create task; in a sync (``sync``) it first refuses a target that is the source's database."""
    return CreateMigrationOperator(
        task_id=task_ids.CREATE,
        source_conn_id="{{ params.source_conn_id }}",
        profile="{{ params.profile }}",
        rules="{{ params.rules | tojson }}",
        rule_set="{{ params.rule_set }}",
        target_conn_id="{{ params.target_conn_id }}" if sync else None,
        preview="{{ params.dry_run }}" if sync else False,
    )


@task(
    trigger_rule=TriggerRule.ALL_DONE,
    retries=0,
    # one notification per run, decided from what collect_logs pushed (see notify.run_outcome)
    on_failure_callback=[step_failed, MigrationNotifier()],
    on_success_callback=MigrationNotifier(),
)
def collect_logs(results: Any, backup: Any = None, **context: Any) -> Json:
    """Write the run's log, whatever happened upstream; fail the run when any unit failed (or never ran).

    ``results``: ``apply_table``'s outputs; ``backup``: the ``backup`` task's output. The plan's
    report and the rollback's outcome are read by task id (common.plan_report_xcom,
    common.rollback_outcome): their tasks may have failed without a return value.

    ``MIGRATION_STORE/logs/<migration id>/<run id>/``: migration.json, migration.log, schema.sql,
    data.sql and summary.json (see :mod:`migration_manager.run_files`).
    """
    from migration_manager.airflow.xcom_models import unit_results
    from migration_manager.report import summarize
    from migration_manager.run_log_text import format_summary

    ti = context["ti"]
    report = plan_report_xcom(ti)
    results = unit_results(results)  # one result per unit applied
    if not report:
        record, folder = write_run_log(
            context, report=None, summary=None, results=results, final_status="failed"
        )
        outcome = run_outcome(context, record=record, summary=None)
        ti.xcom_push(key=OUTCOME_KEY, value=outcome.model_dump(mode="json"))
        finish_run(context, migration_id=record.migration_id)
        raise AirflowFailException(
            "The plan task produced no report: the migration did not start (see the failed "
            f"task's log); the run's log is in {folder}"
        )
    run_id = context["run_id"]
    if not report.units:
        log.info(
            "Nothing to apply: every table already matches the source for its rule "
            "(see each table's reason); no backup was taken and nothing was written"
        )
    # --- backup / rollback outcome (rollback task), shown in the summary and the failure ---
    rollback = rollback_outcome(ti)
    if rollback:
        log.info("Rollback: %s", _rollback_advice(rollback))
    summary = summarize(report, results).model_copy(
        update={"run_id": run_id, "backup": outcome_as(BackupOutcome, backup), "rollback": rollback}
    )
    # --- end backup / rollback ---
    record, folder = write_run_log(
        context,
        report=report,
        summary=summary,
        results=results,
        final_status=str(summary.status),
    )
    outcome = run_outcome(context, record=record, summary=summary)
    ti.xcom_push(key=OUTCOME_KEY, value=outcome.model_dump(mode="json"))
    try:  # for the next plan: which tables were changed in the target after this run
        record_fingerprints(
            context,
            report,
            results,
            rolled_back=bool(rollback and rollback.status == Rollback.ROLLED_BACK),
        )
    except Exception as exc:  # never fails the run: the next plan then finds no prod edits
        log.warning("Could not record the target's table fingerprints: %s", exc)
    finish_run(context, migration_id=summary.migration_id)
    log.info("Migration %s\n%s", summary.migration_id, format_summary(summary))
    log.info("Log written to %s (migration.log, migration.json, schema.sql, data.sql)", folder)
    restart = record.checks.get(task_ids.APP_RESTART)
    if isinstance(restart, AppRestart) and restart.status == "restart needed":
        log.warning("%s", restart.message)
    restart_failed = [
        s for s in record.steps if s.task_id == task_ids.APP_RESTART and s.status == "failed"
    ]
    if summary.status != Outcome.SUCCESS:
        failed = "; ".join(", ".join(u.tables) for u in summary.failed_units)
        advice = _rollback_advice(summary.rollback) or (
            "Each failed unit was rolled back; fix the cause and clear the failed apply_table "
            "task(s) to retry them alone."
        )
        raise AirflowFailException(
            f"{len(summary.failed_units)} unit(s) failed: {failed}. {advice}"
        )
    if restart_failed:
        raise AirflowFailException(
            "The migration was applied, but restarting the target app failed: "
            f"{restart_failed[0].error}. Restart the app by hand; the log is in {folder}"
        )
    return {
        "migration_id": summary.migration_id,
        "status": str(summary.status),
        "totals": summary.totals.model_dump(),
        "run_id": run_id,
        "log": str(folder),
    }


def _rollback_advice(rollback: RollbackOutcome | None) -> str | None:
    if not rollback:
        return None
    status, backup_id = rollback.status, rollback.backup_id
    if status == Rollback.ROLLED_BACK:
        return (
            f"The target was rolled back to backup {backup_id} (taken before this run) and verified: "
            "no change of this run remains. Fix the cause and run the whole migration again."
        )
    if status == Rollback.ROLLBACK_FAILED:
        return (
            f"Rolling back to backup {backup_id} FAILED ({rollback.reason}); the target is as the "
            f"failed run left it. To restore by hand: {rollback.restore_by_hand}."
        )
    if backup_id:
        return (
            f"Not rolled back ({rollback.reason}): the target keeps the units that succeeded. "
            f"Backup {backup_id} holds the state before this run; to restore it: "
            f"{rollback.restore_by_hand}."
        )
    return (
        f"Not rolled back ({rollback.reason}): the target keeps the units that succeeded; "
        "fix the cause and clear the failed apply_table task(s) to retry them alone."
    )


def execute_chain(migration_file: Any, *, pool: str = DEFAULT_POOL) -> Any:
    """env_check -> plan -> env_values -> plugin_check -> env_write -> apply_table (mapped)
    -> rollback -> app_restart -> collect_logs.

    Nothing before ``env_write`` writes to the target.
    """
    target = "{{ params.target_conn_id }}"
    env_check = EnvCheckOperator(
        task_id=task_ids.ENV_CHECK,
        migration_file=migration_file,
        target_conn_id=target,
        retries=0,
        pre_execute=lease_file,  # the run's file is in use (kept from pruning) until collect_logs
    )
    plan = PlanMigrationOperator(
        task_id=task_ids.PLAN,
        migration_file=migration_file,
        target_conn_id="{{ params.target_conn_id }}",
        allow_drop="{{ params.allow_drop }}",
        max_apply_tasks="{{ params.max_apply_tasks }}",
        retries=1,
    )
    report = XComArg(plan, key=task_ids.REPORT_KEY)  # the plan report (plan_report.PlanReport)
    applied = ApplyUnitOperator.partial(
        task_id=task_ids.APPLY_TABLE,
        target_conn_id="{{ params.target_conn_id }}",
        allow_drop="{{ params.allow_drop }}",
        map_index_template="{{ task.batch['label'] }}",
        pool=pool,
        # plugin_check may have the scheduler skip backup and env_write when they have nothing
        # to do: the units still run; an upstream failure still stops them
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    ).expand(batch=plan.output)  # one plan_report.PlannedTask each: its units
    env_values = EnvValuesOperator(
        task_id=task_ids.ENV_VALUES,
        migration_file=migration_file,
        target_conn_id=target,
        env_check=env_check.output,
        retries=0,
        response_timeout=answer_timeout(),
        notifiers=[MigrationNotifier(QUESTION)],
    )
    plugin_check = PluginCheckOperator(
        task_id=task_ids.PLUGIN_CHECK,
        migration_file=migration_file,
        target_conn_id=target,
        report=report,
        env_values=env_values.output,
        retries=0,
        response_timeout=answer_timeout(),
        notifiers=[MigrationNotifier(QUESTION)],
    )
    env_write = EnvWriteOperator(
        task_id=task_ids.ENV_WRITE,
        migration_file=migration_file,
        target_conn_id=target,
        env_values=env_values.output,
        # plugin_check may have the scheduler skip the backup (skip_backup): still write
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    )
    env_check >> plan >> env_values >> plugin_check >> env_write >> applied
    # backup after the checks and before the first write; rollback after every unit, before collect_logs
    backup = BackupOperator(
        task_id=task_ids.BACKUP,
        migration_file=migration_file,
        target_conn_id="{{ params.target_conn_id }}",
        skip_backup="{{ params.skip_backup }}",
        backups_to_keep="{{ params.backups_to_keep }}",
        report=report,
        retries=1,
    )
    done = collect_logs(applied.output, backup=backup.output)
    rollback = RollbackOperator(
        task_id=task_ids.ROLLBACK,
        target_conn_id="{{ params.target_conn_id }}",
        rollback_on_failure="{{ params.rollback_on_failure }}",
        backup=backup.output,
        trigger_rule=TriggerRule.ALL_DONE,
        retries=1,
    )
    plugin_check >> backup >> env_write
    backup >> applied >> rollback >> done
    # after the last write (and after a rollback): restart the running app, or say it must be
    app_restart = app_restart_task(trigger_rule=TriggerRule.ALL_DONE, rollback=rollback.output)
    rollback >> app_restart >> done
    # destructive plans: after the plan, before the other questions and any write
    destructive = DestructiveCheckOperator(
        task_id=task_ids.DESTRUCTIVE_CHECK,
        migration_file=migration_file,
        target_conn_id=target,
        report=report,
        retries=0,
        response_timeout=answer_timeout(),
        notifiers=[MigrationNotifier(QUESTION)],
    )
    plan >> destructive >> env_values
    hold, locked = guard_target_writes(plugin_check, target_conn_id=target)
    # the units wait for the lock themselves: backup and env_write, before them, may be skipped
    locked >> applied
    # tasks that would only skip themselves are skipped by plugin_check through the scheduler
    # (no task process): the backup when skip_backup is set, env_write with nothing to write,
    # and with nothing to apply and no env value to write, these (collect_logs runs)
    plugin_check.backup_task = backup.task_id
    plugin_check.env_write_task = env_write.task_id
    plugin_check.skip_when_idle = [
        hold.task_id,
        locked.task_id,
        backup.task_id,
        env_write.task_id,
        rollback.task_id,
    ]
    return done


# --- migration_rollback ---------------------------------------------------------------------


def standalone_backup_task() -> BackupOperator:
    return BackupOperator(
        task_id=task_ids.BACKUP,
        target_conn_id="{{ params.target_conn_id }}",
        profile="{{ params.profile }}",
        backups_to_keep="{{ params.backups_to_keep }}",
        retries=1,
    )


def app_restart_task(**kwargs: Any) -> AppRestartOperator:
    """Restart the target's running app after writes (see migration_manager.airflow.app_operators).

    ``rollback`` (a migration run) or ``restore`` (migration_rollback): that task's output."""
    return AppRestartOperator(
        task_id=task_ids.APP_RESTART,
        target_conn_id="{{ params.target_conn_id }}",
        retries=1,
        **kwargs,
    )


def restore_task() -> RestoreBackupOperator:
    return RestoreBackupOperator(
        task_id=task_ids.RESTORE,
        target_conn_id="{{ params.target_conn_id }}",
        backup_id="{{ params.backup_id or '' }}",
        mode="{{ params.mode }}",
        new_database_name="{{ params.new_database_name or '' }}",
        force="{{ params.force }}",
        retries=0,
    )
