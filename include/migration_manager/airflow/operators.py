"""Custom operators: each one opens what it needs and makes one call into the engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowFailException

from migration_manager.airflow import task_ids
from migration_manager.airflow.common import (
    as_bool,
    engine_errors,
    is_dry_run,
    migration_archive,
    rollback_outcome,
)
from migration_manager.airflow.connections import environment
from migration_manager.airflow.lock_operators import target_write_lock
from migration_manager.airflow.xcom_models import Json
from migration_manager.config import MigrationRules
from migration_manager.run_options import RunOptions
from migration_manager.step_kinds import Rollback

# The engine (SQLAlchemy, Alembic, psycopg, zstd) is imported inside execute(): parsing a DAG
# file (the dag-processor, and every task process before it runs) imports none of it.
if TYPE_CHECKING:
    from airflow.sdk import Context

    from migration_manager.execute.results import UnitResult
    from migration_manager.manifest import Manifest
    from migration_manager.plan import Unit

log = logging.getLogger(__name__)


class CreateMigrationOperator(BaseOperator):
    """Write a migration file from the source database into the migration store.

    :param source_conn_id: Airflow connection of the source database (templated)
    :param profile: application profile, ``nocobase`` or ``generic`` (templated)
    :param rules: the rules document, JSON text or object (templated)
    :param rule_set: name of a saved rule set; when given, its profile and rules are used (templated)
    :param target_conn_id: in a sync, the target's connection: refused before anything is read
        when it leads to the source's database (templated)
    :param preview: the file is a preview's (a dry-run sync): stored as ``<id>.preview.zip``
        (templated)
    :return: the migration file's URI
    """

    template_fields: Sequence[str] = (
        "source_conn_id",
        "profile",
        "rules",
        "rule_set",
        "target_conn_id",
        "preview",
    )

    def __init__(
        self,
        *,
        source_conn_id: str,
        profile: str = "nocobase",
        rules: Any = None,
        rule_set: str | None = None,
        target_conn_id: str | None = None,
        preview: Any = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.profile = profile
        self.rules = rules
        self.rule_set = rule_set
        self.target_conn_id = target_conn_id
        self.preview = preview

    def execute(self, context: Context) -> str:
        from migration_manager.airflow.rule_set_store import load_rule_set
        from migration_manager.airflow.signing import signing_conn_id, signing_key
        from migration_manager.airflow.store import new_migration_file
        from migration_manager.create import create_migration, new_migration_id

        with engine_errors():
            if self.target_conn_id:
                refuse_same_database(self.source_conn_id, self.target_conn_id)
            if self.rule_set and str(self.rule_set).strip() not in ("", "None"):
                saved = load_rule_set(str(self.rule_set).strip())
                self.log.info("Using rule set %s (profile %s)", saved.name, saved.profile)
                self.profile, self.rules = saved.profile, saved.rules
            # the default dropdowns (system_default, user_default), when set, win
            chosen = RunOptions.of_params(context.get("params")).chosen_rules(
                MigrationRules.parse(self.rules)
            )
            if chosen != MigrationRules.parse(self.rules):
                self.log.info(
                    "Default rules from the form: system %s, user %s",
                    chosen.system.default,
                    chosen.user.default,
                )
            self.rules = chosen
            env = environment(self.source_conn_id)
            key = signing_key()
            if key is None:
                self.log.warning(
                    "No connection %r: the migration file is not signed, and executing sides that "
                    "check signatures refuse it unless allow_unsigned is set",
                    signing_conn_id(),
                )
            else:
                self.log.info("Signing the migration file as %s (key %s)", key.signer, key.key_id)
            migration_id = new_migration_id()
            with new_migration_file(migration_id, preview=as_bool(self.preview)) as (fh, dest):
                result, _manifest = create_migration(
                    env.dsn,
                    fh,
                    profile=self.profile,
                    rules=self.rules,
                    app_env=env.app_env,
                    migration_id=migration_id,
                    signing_key=key,
                )
        for warning in result.warnings:
            self.log.warning("%s", warning)
        self.log.info("Migration file %s: %d tables, %d rows", dest, result.tables, result.rows)
        return str(dest)


def refuse_same_database(source_conn_id: str, target_conn_id: str) -> None:
    """Fail (no retry) when both connections lead to one database: a sync onto itself."""
    from migration_manager.errors import ConfigError
    from migration_manager.pg import same_database

    source, target = environment(source_conn_id), environment(target_conn_id)
    shared = same_database(source.dsn, target.dsn)
    if shared is not None:
        raise ConfigError(
            f"The source connection {source_conn_id!r} and the target connection "
            f"{target_conn_id!r} lead to the same database ({shared.shown}): a migration would "
            "write the database onto itself. Nothing was read or written; choose another "
            "target_conn_id (or source_conn_id)."
        )


POOL_SLOTS_ENV = "MM_POOL_SLOTS"
TASKS_PER_SLOT = 2  # apply_table tasks per slot of the pool when max_apply_tasks is not given


def apply_tasks(value: Any) -> int:
    """How many ``apply_table`` tasks the units are packed into at most: ``max_apply_tasks``
    when given, else :data:`TASKS_PER_SLOT` per slot of the units' pool (``MM_POOL_SLOTS``,
    the slots bin/airflow-local gives the pool ``migration_units``; default 2)."""
    from migration_manager.errors import ConfigError

    text = str(value).strip() if value is not None else ""
    if text not in ("", "None", "0"):
        try:
            most = int(text)
        except ValueError:
            most = 0
        if most < 1:
            raise ConfigError(
                f"max_apply_tasks={value!r} is not a positive whole number; give e.g. 8, or "
                "leave it empty for two tasks per slot of the pool"
            )
        return most
    slots = os.environ.get(POOL_SLOTS_ENV, "").strip()
    return TASKS_PER_SLOT * (int(slots) if slots.isdigit() and int(slots) > 0 else 2)


def max_map_length() -> int:
    """Airflow's ``core.max_map_length``: the most map indexes one ``.expand()`` may fan out to."""
    from airflow.sdk import conf

    return conf.getint("core", "max_map_length", fallback=1024)


class PlanMigrationOperator(BaseOperator):
    """Verify a migration file and check it against the target; return the units to apply.

    :param migration_file: URI or store file name of the migration file (templated)
    :param target_conn_id: Airflow connection of the target database (templated)
    :param allow_drop: also drop target columns/indexes the source lacks (templated)
    :param max_apply_tasks: how many ``apply_table`` tasks the units are packed into at most
        (empty: two per slot of the pool, see :func:`apply_tasks`) (templated)
    :return: one ``plan_report.PlannedTask`` per ``apply_table`` task, in XCom form (mapped over
        by ``apply_table``); the plan report (``plan_report.PlanReport``) goes to XCom key ``report``
    """

    template_fields: Sequence[str] = (
        "migration_file",
        "target_conn_id",
        "allow_drop",
        "max_apply_tasks",
    )

    def __init__(
        self,
        *,
        migration_file: str,
        target_conn_id: str,
        allow_drop: Any = False,
        max_apply_tasks: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.migration_file = migration_file
        self.target_conn_id = target_conn_id
        self.allow_drop = allow_drop
        self.max_apply_tasks = max_apply_tasks

    def execute(self, context: Context) -> list[Json]:
        from migration_manager.execute import prepare, table_bytes, unit_entries
        from migration_manager.plan import pack_units
        from migration_manager.plan_report import PlanReport, planned_tasks

        with engine_errors():
            most = apply_tasks(self.max_apply_tasks)
            env = environment(self.target_conn_id)
            with migration_archive(self.migration_file) as reader:
                plan = prepare(reader, env.dsn, allow_drop=as_bool(self.allow_drop))
                manifest = reader.manifest
                entries = {u.id: unit_entries(reader, u) for u in plan.units}
        target_key, changed = self._prod_edits(plan, manifest)
        sizes = {t.name: table_bytes(t) for t in manifest.tables}
        tasks = pack_units(plan.units, sizes, most)
        limit = max_map_length()
        if len(tasks) > limit:
            raise AirflowFailException(
                f"The migration has {len(tasks)} apply_table tasks, more than Airflow maps one "
                f"task to (core.max_map_length = {limit}). Lower max_apply_tasks (now {most}), or "
                f"raise the limit where Airflow is configured (AIRFLOW__CORE__MAX_MAP_LENGTH="
                f"{len(tasks)} or more, for the API server and the workers), then run the "
                "migration again. Nothing was written."
            )
        for warning in plan.warnings:
            self.log.warning("%s", warning)
        for item in plan.pending:
            self.log.info("%s (%s): %s", item.table, item.rule, "; ".join(item.changes) or "rows")
        for quiet in plan.tables:
            if quiet.reason:
                self.log.info("%s (%s): unchanged: %s", quiet.table, quiet.rule, quiet.reason)
        self.log.info(
            "Migration %s: %d unit(s) to apply in %d apply_table task(s) (max_apply_tasks %d), "
            "%d table(s) need nothing%s",
            plan.migration_id,
            len(plan.units),
            len(tasks),
            most,
            len(plan.tables),
            "" if plan.units else ": nothing to apply (no backup, no write)",
        )
        report = PlanReport(
            migration_id=plan.migration_id,
            migration_file=self.migration_file,
            source=manifest.source.database,
            units=plan.units,
            rules={t.name: t.rule for t in manifest.tables},
            quiet_tables=plan.tables,
            warnings=plan.warnings,
            pending=plan.pending,
            target_key=target_key,
            target_fingerprints=dict(plan.target_fingerprints),
            changed_in_prod=tuple(changed),
            tasks=tuple(tuple(u.id for u in task) for task in tasks),
        )
        context["ti"].xcom_push(key=task_ids.REPORT_KEY, value=report.model_dump(mode="json"))
        # each mapped apply_table gets what its units need (plan_report.planned_tasks)
        planned = planned_tasks(plan, tasks, entries, str(self.migration_file))
        return [t.model_dump(mode="json") for t in planned]

    def _prod_edits(self, plan: Any, manifest: Manifest) -> tuple[str | None, list[Any]]:
        """The target's key in the store and the tables changed there since the last migration."""
        from migration_manager.airflow.store import load_target_record
        from migration_manager.prod_edits import changed_since, target_key

        if plan.target_identity is None:
            return None, []
        key = target_key(str(self.target_conn_id), plan.target_identity)
        record = load_target_record(key)
        applied = {t for u in plan.units for t in u.tables}
        rules = {t.name: t.rule for t in manifest.tables}
        changed = changed_since(record, plan.target_fingerprints, rules, applied)
        if record is None:
            self.log.info(
                "No fingerprints recorded for target %s yet: prod edits are found from the next run on",
                key,
            )
        for c in changed:
            self.log.warning(
                "%s (%s): changed in the target since the last migration into it (%d rows then, "
                "%d now); the rule would replace its rows (counted by destructive_check)",
                c.table,
                c.rule,
                c.recorded_rows,
                c.rows,
            )
        return key, changed


class ApplyUnitOperator(BaseOperator):
    """Apply one task's units (a unit: a table, or tables linked by foreign keys) one after
    another, each in one transaction; a unit that fails does not stop the others.

    The plan packs many small units into few tasks (``plan.pack_units``, ``max_apply_tasks``).
    A unit that fails fails the task once the others are applied; a retry, or clearing the task,
    applies again only its units that did not succeed (those that did are kept in the task's
    ``task_state_store`` and reported again). Each unit is idempotent.

    :param batch: one element of ``plan``'s return value, ``plan_report.PlannedTask``'s XCom
        form (mapped over ``plan``'s output; not templated: its texts come from the migration
        file and are data, and rendering each of them as a Jinja template took seconds per task)
    :param target_conn_id: Airflow connection of the target database (templated)
    :param allow_drop: also drop target columns/indexes the source lacks (templated)
    :return: one result per unit: per table, rule, DDL executed, rows
        inserted/updated/deleted/unchanged, seconds. A task that fails pushes the results of
        its units that were applied as its return value before it fails.
    """

    template_fields: Sequence[str] = ("target_conn_id", "allow_drop")

    def __init__(self, *, batch: Json, target_conn_id: str, allow_drop: Any = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.batch = batch
        self.target_conn_id = target_conn_id
        self.allow_drop = allow_drop

    def execute(self, context: Context) -> list[Json]:
        from migration_manager.config import DATA_RULES
        from migration_manager.errors import TransientError
        from migration_manager.execute import apply_unit, apply_units
        from migration_manager.plan_report import PlannedTask

        planned = PlannedTask.model_validate(self.batch)
        by_id = {p.unit.id: p for p in planned.units}
        self.log.info("%d unit(s): %s", len(by_id), planned.label)
        refuse_after_rollback(context, planned.label)
        dry_run = is_dry_run(context)
        store = None if dry_run else context.get("task_state_store")
        done = _earlier_results(store, by_id)
        cleared = cleared_by_a_person(context, self)
        loads_rows = any(
            p.entries is None or any(e.rule in DATA_RULES for e in p.entries.values())
            for p in planned.units
            if p.unit.id not in done
        )
        committed: dict[str, UnitResult] = dict(done)

        def apply(unit: Unit) -> UnitResult:
            p = by_id[unit.id]
            expected = p.fingerprints
            if expected and cleared:
                # the drift guard binds the run's own tries to the target the plan (and an
                # approval) saw; a person who clears a task has looked at the target
                self.log.warning(
                    "%s: the task was cleared: applying it to the target as it is now, without "
                    "checking its tables against the plan's fingerprints (drift guard off)",
                    unit.label,
                )
                expected = None
            result = apply_unit(
                reader,
                env.dsn,
                unit,
                allow_drop=as_bool(self.allow_drop),
                dry_run=dry_run,  # rolled back
                entries=p.entries,
                checked=p.checked,
                expected=expected,  # plan-time fingerprints (absent in older plans)
            )
            committed[unit.id] = result
            return result

        try:
            with engine_errors():
                env = environment(self.target_conn_id)
                with target_write_lock(context, env.dsn, self.log), ExitStack() as stack:
                    reader = (
                        stack.enter_context(migration_archive(str(planned.units[0].migration_file)))
                        if loads_rows
                        else None
                    )
                    outcome = apply_units([p.unit for p in planned.units], apply, done=done)
        except BaseException:
            _keep_applied(store, committed, self.log)
            raise
        results = [r.model_dump(mode="json") for r in outcome.results]
        if not outcome.failures:
            if done:
                _keep_applied(store, {}, self.log)  # a later clear applies every unit again
            return results
        # for collect_logs: a failed task returns nothing, its applied units are reported
        context["ti"].xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=results)
        _keep_applied(store, committed, self.log)
        if outcome.terminal:
            raise AirflowFailException(outcome.error_text())
        raise TransientError(outcome.error_text() + " Airflow retries it while it has tries left.")


APPLIED_KEY = "applied_units"  # task_state_store: results of the units applied, by unit id


def _earlier_results(store: Any, units: Collection[str]) -> dict[str, UnitResult]:
    """The results of this task's units that an earlier try applied (kept in its task state)."""
    from migration_manager.execute.results import UnitResult

    if store is None:
        return {}
    try:
        kept = store.get(APPLIED_KEY) or {}
    except Exception:  # no task state (an older Airflow, a backend error): apply every unit
        log.warning("Could not read this task's state: every unit is applied", exc_info=True)
        return {}
    return {k: UnitResult.model_validate(v) for k, v in kept.items() if k in units}


def _keep_applied(store: Any, applied: Mapping[str, UnitResult], task_log: Any) -> None:
    """Keep the results of the units applied so far for the next try, or none when
    ``applied`` is empty (never fails the task)."""
    if store is None:
        return
    try:
        if applied:
            store.set(APPLIED_KEY, {k: r.model_dump(mode="json") for k, r in applied.items()})
        else:
            store.delete(APPLIED_KEY)
    except Exception:
        task_log.warning(
            "Could not keep the applied units: a retry applies them again", exc_info=True
        )


def cleared_by_a_person(context: Context, task: BaseOperator) -> bool:
    """Whether this try follows a clear: clearing raises ``max_tries`` past the task's retries,
    Airflow's own retries never do."""
    return int(getattr(context["ti"], "max_tries", 0) or 0) > int(task.retries or 0)


def refuse_after_rollback(context: Context, label: str) -> None:
    """A unit of a run that was rolled back must not be applied alone (a cleared map index).

    The rollback restored the whole target to the backup taken before the run: every unit's
    changes are gone. Applying one unit then would leave a partial target and could turn the
    run green. The rollback is recorded in the store (it outlives a clear of the rollback
    task, which deletes that task's XCom) and in the rollback task's XCom.
    """
    from migration_manager.airflow.store import run_rollback_record

    ti = context["ti"]
    record = run_rollback_record(ti.dag_id, ti.run_id)
    if record is None:
        pushed = rollback_outcome(ti)
        if pushed is not None and pushed.status == Rollback.ROLLED_BACK:
            record = pushed
    if record is not None:
        raise AirflowFailException(
            f"{label}: this run ({ti.dag_id}/{ti.run_id}) was rolled back to backup "
            f"{record.backup_id} after a unit failed, so no change of the run remains on "
            "the target. Applying this unit alone would leave a partial target: run the whole "
            "migration again (trigger a new run) instead of clearing tasks of this one."
        )
