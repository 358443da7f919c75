"""The run's log in the store: step records pushed by every task, gathered by ``collect_logs``.

Inside a task, Airflow 3 gives no access to the metadata database, so each task records its
own step: :data:`STEP_HOOKS` (in the DAGs' ``default_args``) push a small XCom (key ``step``)
when the task starts (``pre_execute``), when it succeeds (``post_execute``, while the task is
still running) and when it fails (``on_failure_callback``). ``collect_logs`` reads those
records, takes each task's final state from the Task SDK (``get_task_states``, which also
covers tasks that never ran), and writes ``MIGRATION_STORE/logs/<migration id>/<run id>/``
through :mod:`migration_manager.run_files`.

This module owns what the engine does not know: which task of the DAGs is which kind of step
(:data:`STEP_KINDS`) and which Airflow task states mean that a step failed (:data:`FAILED_STATES`).

Recording a step never fails a task: a hook that cannot push logs a warning and returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

from airflow.sdk import BaseHook, ObjectStoragePath

from migration_manager.airflow import task_ids as ids
from migration_manager.airflow.signing import task_trust
from migration_manager.airflow.store import (
    as_local,
    migration_file_path,
    save_run_log,
    store_root,
)
from migration_manager.errors import ConfigError
from migration_manager.redaction import redact
from migration_manager.run_options import RunOptions
from migration_manager.run_record import Endpoint, MigrationFileInfo, RunRecord, RunSummary
from migration_manager.run_record_build import (
    RunInfo,
    Step,
    build_record,
    describe_file,
    unreadable_file,
)
from migration_manager.step_kinds import StepKind
from migration_manager.step_outcomes import UnitOutcome, outcome_of
from migration_manager.store_layout import run_log_dir, run_log_names
from migration_manager.text_format import utc_iso

if TYPE_CHECKING:
    from migration_manager.archive import Openable
    from migration_manager.execute.results import UnitResult
    from migration_manager.plan_report import PlanReport

log = logging.getLogger(__name__)

STEP_KEY = "step"
UNKNOWN_MIGRATION = "no-migration-file"
_ERROR_CHARS = 4000
# which task of the DAGs is which kind of step (whose return value the record summarises)
STEP_KINDS: dict[str, StepKind] = {
    ids.CREATE: StepKind.CREATE_FILE,
    ids.ENV_CHECK: StepKind.ENV_CHECK,
    ids.PLAN: StepKind.PLAN,
    ids.ENV_VALUES: StepKind.ENV_VALUES,
    ids.PLUGIN_CHECK: StepKind.PLUGIN_CHECK,
    ids.DESTRUCTIVE_CHECK: StepKind.DESTRUCTIVE_CHECK,
    ids.BACKUP: StepKind.BACKUP,
    ids.ENV_WRITE: StepKind.ENV_WRITE,
    ids.APPLY_TABLE: StepKind.APPLY_UNIT,
    ids.ROLLBACK: StepKind.ROLLBACK,
    ids.RESTORE: StepKind.RESTORE,
    ids.APP_RESTART: StepKind.APP_RESTART,
}
# the tasks that check before anything is written (their outcomes are the record's checks)
CHECK_TASKS = (
    ids.ENV_CHECK,
    ids.ENV_VALUES,
    ids.PLUGIN_CHECK,
    ids.DESTRUCTIVE_CHECK,
    ids.ENV_WRITE,
    ids.APP_RESTART,
)
APPLY_TASK = ids.APPLY_TABLE
# Airflow task states that mean "did not succeed" (a skipped step is not a failure)
FAILED_STATES = frozenset({"failed", "upstream_failed"})


class PushedStep(TypedDict, total=False):
    """A step record as a task pushes it (XCom key ``step``)."""

    task_id: str
    map_index: int
    attempt: int | None
    status: str
    start: str | None
    end: str | None
    error: str | None
    note: str | None


def log_folder(migration_id: str | None, run_id: str) -> ObjectStoragePath:
    return run_log_dir(store_root(), *run_log_names(migration_id or UNKNOWN_MIGRATION, run_id))


# --- step records (run inside every task) ------------------------------------------------------


def _push(
    context: Any,
    status: str,
    error: BaseException | str | None = None,
    note: BaseException | str | None = None,
) -> None:
    try:
        ti = context["ti"]
        now = datetime.now(UTC)
        start = getattr(ti, "start_date", None) or now
        record: PushedStep = {
            "task_id": ti.task_id,
            "map_index": ti.map_index if ti.map_index is not None else -1,
            "attempt": ti.try_number,
            "status": status,
            "start": utc_iso(start),
            "end": None if status == "running" else utc_iso(now),
            "error": redact(str(error))[:_ERROR_CHARS] if error else None,
            "note": redact(str(note))[:_ERROR_CHARS] if note else None,
        }
        ti.xcom_push(key=STEP_KEY, value=record)
    except Exception:  # never let the log break the migration
        log.warning("Could not record this step for the migration log", exc_info=True)


def step_started(context: Any) -> None:
    _push(context, "running")


def step_succeeded(context: Any, result: Any = None) -> None:
    _push(context, "success")


def step_failed(context: Any) -> None:
    _push(context, "failed", context.get("exception"))


def step_skipped(context: Any) -> None:
    _push(context, "skipped", note=context.get("exception"))


STEP_HOOKS: dict[str, Callable[[Any], None]] = {
    "pre_execute": step_started,
    "post_execute": step_succeeded,
    "on_failure_callback": step_failed,
    "on_skipped_callback": step_skipped,
}


# --- gathering (run inside collect_logs) ----------------------------------------------------


def _states(ti: Any, task_ids: set[str]) -> dict[tuple[str, int], str]:
    """Every task instance's state in this run: (task id, map index) -> state."""
    try:
        found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    except Exception:
        log.warning("Could not read the task states of this run", exc_info=True)
        return {}
    states: dict[tuple[str, int], str] = {}
    for key, state in found.items():
        if key in task_ids:
            states[(key, -1)] = str(state) if state else "none"
            continue
        task_id, _, index = key.rpartition("_")
        if task_id in task_ids and index.isdigit():
            states[(task_id, int(index))] = str(state) if state else "none"
    return states


def task_states(ti: Any, task_ids: set[str]) -> dict[tuple[str, int], str]:
    """Every task instance's state in this run: (task id, map index) -> state."""
    return _states(ti, task_ids)


def _succeeded(states: dict[tuple[str, int], str]) -> set[str]:
    """Unmapped tasks that succeeded: only those have a return value to read (no 404s logged)."""
    return {task for (task, index), state in states.items() if index < 0 and state == "success"}


def gather_steps(
    context: Any,
    *,
    report: PlanReport | None,
    results: list[UnitResult],
    final_status: str,
    states: dict[tuple[str, int], str] | None = None,
) -> list[Step]:
    """One :class:`~migration_manager.run_record_build.Step` per task instance of the run, with its outcome."""
    ti = context["ti"]
    dag = context["dag"]
    task_ids = set(dag.task_ids)
    records: dict[tuple[str, int], PushedStep] = {}
    for rec in ti.xcom_pull(task_ids=sorted(task_ids), key=STEP_KEY) or []:
        if isinstance(rec, dict) and rec.get("task_id"):
            records[(rec["task_id"], int(rec.get("map_index", -1)))] = cast("PushedStep", rec)
    if states is None:
        states = _states(ti, task_ids)

    labels, outcomes = _apply_steps(report, results)
    for task_id in (task_ids & set(STEP_KINDS) & _succeeded(states)) - {APPLY_TASK}:
        outcomes[(task_id, -1)] = ti.xcom_pull(task_ids=task_id, map_indexes=-1)
    if report:
        outcomes[(ids.PLAN, -1)] = report.outcome()  # units and the differences found
    rollback = (
        ti.xcom_pull(task_ids=ids.ROLLBACK, key=ids.ROLLBACK_KEY)
        if ids.ROLLBACK in _succeeded(states)
        else None
    )
    if rollback:
        outcomes[(ids.ROLLBACK, -1)] = rollback

    # tasks plugin_check had the scheduler skip pushed no record: its note says why
    notes = (
        ti.xcom_pull(task_ids=ids.PLUGIN_CHECK, key=ids.SKIP_NOTES_KEY)
        if states.get((ids.PLUGIN_CHECK, -1)) == "success"
        else None
    ) or {}
    now = utc_iso(datetime.now(UTC))
    steps = []
    for key in sorted(set(records) | set(states)):
        task_id, map_index = key
        rec = PushedStep(**(records.get(key) or {"task_id": task_id, "map_index": map_index}))
        state = states.get(key) or rec.get("status") or "unknown"
        if task_id == ti.task_id and map_index == (
            ti.map_index if ti.map_index is not None else -1
        ):
            state, rec["end"] = final_status, now  # this task: how it is about to end
        elif task_id == ids.HOLD_TARGET_LOCK and state == "running":
            # it holds the lock until every writer, this task among them, has finished: it
            # ends as this record is written (a finished run never shows it running)
            state, rec["end"] = "success", now
            rec["note"] = "held the target's lock for the run's writes, released as the run ends"
        elif state in ("running", "queued", "scheduled", "none") and rec.get("status") == "running":
            state = rec["status"]
        if state == "success" and rec.get("status") == "failed":
            rec["error"] = None  # an earlier failure whose retry succeeded
        if state == "skipped" and not rec.get("note") and notes.get(task_id):
            rec["note"] = str(notes[task_id])
        steps.append(
            _step(
                rec,
                state=str(state),
                label=labels.get(map_index) if task_id == APPLY_TASK else None,
                outcome=outcomes.get(key),
            )
        )
    return steps


def _apply_steps(
    report: PlanReport | None, results: list[UnitResult]
) -> tuple[dict[int, str], dict[tuple[str, int], Any]]:
    """Each ``apply_table`` map index's name and outcome: its units' results as one (every
    table of the task), from the plan's packing (``PlanReport.tasks``)."""
    from migration_manager.plan import task_label

    if not report:
        return {}, {}
    tasks = report.task_units
    labels = {i: task_label(units) for i, units in enumerate(tasks)}
    by_unit = {r.unit: r for r in results}
    outcomes: dict[tuple[str, int], Any] = {}
    for i, units in enumerate(tasks):
        found = [by_unit[u.id] for u in units if u.id in by_unit]
        if found:
            outcomes[(APPLY_TASK, i)] = UnitOutcome.model_validate(
                {
                    "unit": ", ".join(r.unit for r in found),
                    "seconds": round(sum(r.seconds for r in found), 3),
                    "tables": [t.model_dump(mode="json") for r in found for t in r.tables],
                }
            )
    return labels, outcomes


def _step(rec: PushedStep, *, state: str, label: str | None, outcome: Any) -> Step:
    """A step record pushed by a task (or a task that pushed none), with its final state."""
    task_id = str(rec["task_id"])
    map_index = rec.get("map_index")
    return Step(
        task_id=task_id,
        status=state or "unknown",
        map_index=int(map_index) if map_index is not None else -1,
        label=label,
        start=utc_iso(rec.get("start")),
        end=utc_iso(rec.get("end")),
        attempt=int(attempt) if (attempt := rec.get("attempt")) is not None else None,
        outcome=outcome_of(STEP_KINDS.get(task_id), outcome),
        error=redact(str(rec["error"])) if rec.get("error") else None,
        note=redact(str(rec["note"])) if rec.get("note") else None,
        failed=state in FAILED_STATES,
    )


def describe_connection(conn_id: str | None) -> Endpoint | None:
    """Where a connection points: host, port, database, user. Never its password or extra."""
    if not conn_id:
        return None
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        return Endpoint(conn_id=conn_id, error=redact(str(exc)))
    return Endpoint(
        conn_id=conn_id,
        host=conn.host or "127.0.0.1",
        port=conn.port or 5432,
        database=conn.schema or "postgres",
        user=conn.login or None,
    )


def _file_ref(context: Any, report: PlanReport | None) -> str | None:
    ti = context["ti"]
    ref: object = report.migration_file if report else None
    if not ref and ids.CREATE in context["dag"].task_ids:
        ref = ti.xcom_pull(task_ids=ids.CREATE)
    if not ref:
        ref = (context.get("params") or {}).get("migration_file")
    return str(ref) if ref else None


def _describe_file(ref: str | None, options: RunOptions) -> MigrationFileInfo | None:
    """The file for the log, with who signed it (checked against the trusted keys the tasks used)."""
    if not ref:
        return None
    try:
        path = migration_file_path(ref)
    except Exception as exc:
        return unreadable_file(ref, str(exc), name=ref)
    allow = options.allow_unsigned
    keys = None
    try:
        keys = task_trust(allow).keys
    except ConfigError as exc:  # the Variable is broken: the tasks refused the file already
        log.warning(
            "The trusted keys cannot be read (%s); the log shows the signature unchecked", exc
        )
    # a local store's file is read with pathlib (a Path opens like an Openable)
    return describe_file(
        cast("Openable", as_local(path)), uri=str(path), keys=keys, allow_unsigned=allow
    )


def write_run_log(
    context: Any,
    *,
    report: PlanReport | None,
    summary: RunSummary | None,
    results: list[UnitResult],
    final_status: str,
    errors: list[str] | None = None,
) -> tuple[RunRecord, ObjectStoragePath]:
    """Gather everything about this run and write its log folder; returns the record and the
    folder."""
    ti = context["ti"]
    dag_run = context["dag_run"]
    params = dict(context.get("params") or {})
    options = RunOptions.of_params(params)
    file_info = _describe_file(_file_ref(context, report), options)
    source = _source(file_info, options.source_conn_id if "source_conn_id" in params else None)
    states = _states(ti, set(context["dag"].task_ids))
    succeeded = _succeeded(states)
    checks = {STEP_KINDS[t]: ti.xcom_pull(task_ids=t) for t in CHECK_TASKS if t in succeeded}
    steps = gather_steps(
        context, report=report, results=results, final_status=final_status, states=states
    )
    backup: object = summary.backup if summary else None
    if backup is None and ids.BACKUP in succeeded:
        backup = ti.xcom_pull(task_ids=ids.BACKUP)
    rollback = summary.rollback if summary else None
    run_type = getattr(dag_run, "run_type", None)
    record = build_record(
        run=RunInfo(
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            run_type=str(getattr(run_type, "value", run_type) or "") or None,
            triggered_by=getattr(dag_run, "triggering_user_name", None)
            or str(getattr(run_type, "value", run_type) or "-"),
            start_date=getattr(dag_run, "start_date", None),
        ),
        steps=steps,
        report=report,
        summary=summary,
        migration_file=file_info,
        source=source,
        target=describe_connection(options.target_conn_id),
        params=params,
        checks=checks,
        backup=backup,
        rollback=rollback,
        step_order=[t.task_id for t in context["dag"].topological_sort()],
        ended_at=datetime.now(UTC),
        errors=errors or [],
        dry_run=options.dry_run,
    )
    folder = log_folder(record.migration_id, dag_run.run_id)
    save_run_log(folder, record, final_status=final_status)
    return record, folder


def _source(file_info: MigrationFileInfo | None, conn_id: str | None) -> Endpoint | None:
    """The source: what the file says about it, and where the source connection points
    (the file's database name wins over the connection's)."""
    source = (file_info.source.to_json_dict() if file_info and file_info.source else {}) or {}
    if conn_id:
        conn = describe_connection(conn_id)
        source |= {
            k: v
            for k, v in (conn.to_json_dict() if conn else {}).items()
            if k != "database" or not source.get("database")
        }
    return Endpoint.model_validate(source) if source else None
