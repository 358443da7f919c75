"""Backup and restore tasks: ``backup`` and ``rollback`` in migration_execute/sync, ``restore`` in migration_rollback.

Each one opens what it needs and makes one call into ``migration_manager.backup`` (through the
store helpers, which keep backups under ``MIGRATION_STORE/backups/<target>/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from migration_manager.airflow import task_ids
from migration_manager.airflow.common import (
    as_bool,
    engine_errors,
    is_dry_run,
    migration_archive,
)
from migration_manager.airflow.connections import environment
from migration_manager.airflow.lock_operators import target_write_lock
from migration_manager.airflow.store import (
    backup_records,
    load_backup_record,
    local_backup_file,
    record_run_rollback,
    save_backup,
    save_restore_record,
)
from migration_manager.airflow.xcom_models import Json
from migration_manager.backup.restore import (
    IN_PLACE,
    MODES,
    NEW_DATABASE,
    restore_in_place,
    restore_new_database,
    restore_refusals,
)
from migration_manager.errors import BackupError, ConfigError
from migration_manager.step_kinds import Rollback
from migration_manager.step_outcomes import RollbackOutcome
from migration_manager.store_layout import backup_key

if TYPE_CHECKING:
    from airflow.sdk import Context

    from migration_manager.backup.record import BackupRecord
    from migration_manager.backup.restore import RestoreResult


def _by_hand(conn_id: str, backup_id: str) -> str:
    return (
        f'trigger migration_rollback with {{"target_conn_id": "{conn_id}", "backup_id": "{backup_id}", '
        '"mode": "in_place"}'
    )


class BackupOperator(BaseOperator):
    """Back up the whole target database (``pg_dump -Fc``) into the store before anything is written.

    In a migration run (``migration_file`` given) no backup is taken, with a log line, when
    ``skip_backup`` is set or the plan has nothing to apply. Without a migration file it is a
    standalone backup (``migration_backup``), of the application ``profile``.

    :param migration_file: URI or store file name of the migration file (templated)
    :param profile: the application profile when there is no migration file (templated)
    :param target_conn_id: Airflow connection of the target database (templated)
    :param skip_backup: take no backup; automatic rollback is then unavailable (templated)
    :param backups_to_keep: how many backups of this target to keep (templated)
    :param report: in a migration run, ``plan``'s report (XCom form of ``plan_report.PlanReport``)
    :return: the backup's id, URI, size and sha256, or None when none was taken
    """

    template_fields: Sequence[str] = (
        "migration_file",
        "profile",
        "target_conn_id",
        "skip_backup",
        "backups_to_keep",
        "report",
    )

    def __init__(
        self,
        *,
        target_conn_id: str,
        migration_file: str | None = None,
        profile: str | None = None,
        skip_backup: Any = False,
        backups_to_keep: Any = 10,
        report: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.report = report
        self.migration_file = migration_file
        self.profile = profile
        self.target_conn_id = target_conn_id
        self.skip_backup = skip_backup
        self.backups_to_keep = backups_to_keep

    def execute(self, context: Context) -> Json | None:
        if self.migration_file and is_dry_run(context):
            self.log.info("Dry run: every unit is rolled back, no backup needed")
            return None
        if as_bool(self.skip_backup):
            self.log.warning(
                "skip_backup is set: no backup is taken, and automatic rollback is unavailable "
                "for this run"
            )
            return None
        if self.migration_file:
            from migration_manager.plan_report import PlanReport

            report = PlanReport.pulled(self.report)
            if report is None or not report.units:
                self.log.info(
                    "The plan has no unit to apply: nothing will be written, no backup needed"
                )
                return None
        with engine_errors():
            try:
                keep = int(self.backups_to_keep)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"backups_to_keep {self.backups_to_keep!r} is not a whole number"
                ) from None
            env = environment(self.target_conn_id)
            profile, migration_id = self.profile, None
            if self.migration_file:
                with migration_archive(self.migration_file) as reader:
                    profile, migration_id = reader.manifest.profile, reader.manifest.id
            key = backup_key(self.target_conn_id)
            # The target's lock, as for a write: a backup never catches a migration half done
            # (and a migration waits for the backup to finish).
            with target_write_lock(context, env.dsn, self.log):
                record, uri = save_backup(
                    env.dsn,
                    key,
                    keep=keep,
                    profile=profile,
                    app_env=env.app_env,
                    migration_id=migration_id,
                    run_id=context["run_id"],
                    target_conn_id=self.target_conn_id,
                )
        self.log.info(
            "Backup %s of %s (%s, app version %s): %d tables, %d rows, %d bytes, sha256 %s -> %s",
            record.backup_id,
            record.database,
            self.target_conn_id,
            record.app_version or "-",
            record.tables,
            record.rows,
            record.size,
            record.sha256,
            uri,
        )
        return {
            "backup_id": record.backup_id,
            "uri": str(uri),
            "target_key": key,
            "database": record.database,
            "size": record.size,
            "sha256": record.sha256,
            "tables": record.tables,
            "rows": record.rows,
        }


class RollbackOperator(BaseOperator):
    """After ``apply_table``: when a unit failed, restore the backup into the target and verify it.

    Runs with trigger rule ``all_done`` (after every map index and its retries) and skips itself
    when no unit failed. The outcome goes to XCom (key ``rollback``) for ``collect``.

    :param target_conn_id: Airflow connection of the target database (templated)
    :param rollback_on_failure: restore automatically; off, only report the backup id (templated)
    :param backup: the ``backup`` task's outcome (its output; None: no backup was taken)
    :param units_task_id: the mapped task whose failed units are rolled back
    :return: the outcome: status ``rolled back`` / ``not rolled back``, backup id, tables verified
    """

    template_fields: Sequence[str] = ("target_conn_id", "rollback_on_failure", "backup")

    def __init__(
        self,
        *,
        target_conn_id: str,
        rollback_on_failure: Any = True,
        backup: Any = None,
        units_task_id: str = task_ids.APPLY_TABLE,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.target_conn_id = target_conn_id
        self.rollback_on_failure = rollback_on_failure
        self.backup = backup
        self.units_task_id = units_task_id

    def execute(self, context: Context) -> Json:
        ti = context["ti"]
        failed = ti.get_ti_count(
            dag_id=ti.dag_id, task_ids=[self.units_task_id], run_ids=[ti.run_id], states=["failed"]
        )
        if not failed:
            raise AirflowSkipException("No apply_table unit failed: nothing to roll back")
        backup = self.backup or None
        backup_id = backup["backup_id"] if backup else None
        # failed apply_table tasks (a task may hold several units: plan.pack_units)
        outcome: Json = {"failed_units": failed, "backup_id": backup_id}
        if backup is None:
            outcome |= {
                "status": Rollback.NOT_ROLLED_BACK,
                "reason": "no backup was taken (skip_backup)",
                "restore_by_hand": None,
            }
            self.log.error(
                "%d apply_table task(s) failed and there is no backup of this run (skip_backup): the target "
                "keeps the units that succeeded; nothing was rolled back",
                failed,
            )
        elif not as_bool(self.rollback_on_failure):
            outcome |= {
                "status": Rollback.NOT_ROLLED_BACK,
                "reason": "rollback_on_failure is off",
                "restore_by_hand": _by_hand(self.target_conn_id, backup_id or ""),
            }
            self.log.error(
                "%d apply_table task(s) failed; rollback_on_failure is off, so the target keeps the units that "
                "succeeded. To restore the state before this run: %s",
                failed,
                outcome["restore_by_hand"],
            )
        else:
            self.log.info(
                "%d apply_table task(s) failed: rolling the target back to backup %s",
                failed,
                backup_id,
            )
            try:
                with engine_errors():
                    env = environment(self.target_conn_id)
                    key = backup["target_key"]
                    record = load_backup_record(key, backup_id or "")
                    with (
                        local_backup_file(key, record) as path,
                        target_write_lock(context, env.dsn, self.log),
                    ):
                        result = restore_in_place(env.dsn, path, record)
            except Exception as exc:
                outcome |= {
                    "status": Rollback.ROLLBACK_FAILED,
                    "reason": str(exc),
                    "restore_by_hand": _by_hand(self.target_conn_id, backup_id or ""),
                }
                ti.xcom_push(key=task_ids.ROLLBACK_KEY, value=outcome)
                raise
            outcome |= {"status": Rollback.ROLLED_BACK, **result.model_dump(mode="json")}
            # before anything else: a cleared apply_table of this run must find it (see
            # operators.refuse_after_rollback), even once this task's XCom is cleared
            record_run_rollback(ti.dag_id, ti.run_id, RollbackOutcome.model_validate(outcome))
            self.log.info(
                "Rolled back: the target is back at backup %s (taken before this run); %d tables "
                "verified (row count and content checksum)%s",
                backup_id,
                result.tables,
                f"; dropped tables the migration had created: {', '.join(result.removed)}"
                if result.removed
                else "",
            )
        ti.xcom_push(key=task_ids.ROLLBACK_KEY, value=outcome)
        return outcome


class RestoreBackupOperator(BaseOperator):
    """Restore a backup into the target database (in place) or into a new database on its server.

    Refuses, unless ``force``: other clients connected (in place only), a different application
    version, a different PostgreSQL major version. A damaged backup is always refused.

    :param target_conn_id: Airflow connection of the target database (templated)
    :param backup_id: the backup to restore; empty: list the target's backups and fail (templated)
    :param mode: ``in_place`` or ``new_database`` (templated)
    :param new_database_name: the database to create in ``new_database`` mode (templated)
    :param force: restore despite the refusals above (templated)
    :return: the restore's result (tables and rows verified, database)
    """

    template_fields: Sequence[str] = (
        "target_conn_id",
        "backup_id",
        "mode",
        "new_database_name",
        "force",
    )

    def __init__(
        self,
        *,
        target_conn_id: str,
        backup_id: Any = "",
        mode: str = IN_PLACE,
        new_database_name: Any = "",
        force: Any = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.target_conn_id = target_conn_id
        self.backup_id = backup_id
        self.mode = mode
        self.new_database_name = new_database_name
        self.force = force

    def execute(self, context: Context) -> Json:
        backup_id = "" if self.backup_id in (None, "None") else str(self.backup_id).strip()
        mode = str(self.mode or "").strip()
        with engine_errors():
            key = backup_key(self.target_conn_id)
            if not backup_id:
                self._list_and_fail(key)
            if mode not in MODES:
                raise ConfigError(f"mode {mode!r}: use one of {', '.join(MODES)}")
            new_name = (
                ""
                if self.new_database_name in (None, "None")
                else str(self.new_database_name).strip()
            )
            if mode == NEW_DATABASE and not new_name:
                raise ConfigError(
                    "mode new_database needs new_database_name: the database to create and restore into"
                )
            env = environment(self.target_conn_id)
            record = load_backup_record(key, backup_id)
            self.log.info("Backup: %s", record.describe())
            problems = restore_refusals(env.dsn, record, mode=mode)
            if problems and not as_bool(self.force):
                lines = "\n".join(f"  - {p}" for p in problems)
                raise BackupError(
                    f"Restoring backup {backup_id} ({mode}) was refused; nothing was changed:\n{lines}\n"
                    "Fix these, or set force to restore anyway"
                )
            for p in problems:
                self.log.warning("force is set, restoring despite: %s", p)
            with local_backup_file(key, record) as path:
                if mode == IN_PLACE:
                    result = restore_in_place(env.dsn, path, record)
                    out = result.model_dump(mode="json")
                else:
                    result, _new_dsn = restore_new_database(env.dsn, path, record, new_name)
                    out = result.model_dump(mode="json")
        try:
            self._remember(context, key, record, result)
        except Exception:  # the restore is done and verified: say what is missing, do not fail
            self.log.warning(
                "The restore could not be recorded in the migration store: the Migrations page "
                "does not show it, and the next sync may report the rows it put back as changed "
                "in prod",
                exc_info=True,
            )
        if mode == NEW_DATABASE:
            self.log.info(
                "Database %s now holds backup %s, verified; %s is untouched. Point an application "
                "instance of version %s at it, test it, then switch traffic.",
                result.database,
                backup_id,
                record.database,
                record.app_version or "(as at the backup)",
            )
        else:
            self.log.info("Database %s is back at backup %s, verified", result.database, backup_id)
        return {**out, "forced": problems if problems else []}

    def _remember(
        self, context: Context, key: str, record: BackupRecord, result: RestoreResult
    ) -> None:
        """The restore in the store (the Migrations and Backups pages show it); after a restore
        in place, the target's fingerprint record as the restore left it (no prod-edit alarm at
        the next sync for the rows the restore put back)."""
        from datetime import UTC, datetime

        from migration_manager.airflow.target_record import record_restore
        from migration_manager.backup.record import RestoreRecord
        from migration_manager.profiles import get_profile

        ti = context["ti"]
        in_place = result.mode == IN_PLACE
        restore = RestoreRecord(
            backup_id=record.backup_id,
            target_conn_id=self.target_conn_id,
            mode=result.mode,
            database=result.database,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            restored_at=datetime.now(UTC).isoformat(timespec="seconds"),
            triggered_by=getattr(context.get("dag_run"), "triggering_user_name", None),
            tables=result.tables,
            rows=result.rows,
            undid_migration_id=record.migration_id if in_place else None,
            undid_run_id=record.run_id if in_place else None,
        )
        self.log.info("Restore recorded: %s", save_restore_record(key, restore))
        if in_place:
            env = environment(self.target_conn_id)
            schema = get_profile(record.profile).scope(dict(record.app_settings)).schema
            record_restore(
                self.target_conn_id,
                env.dsn,
                schema,
                f"{ti.dag_id}/{ti.run_id} (restore of backup {record.backup_id})",
            )

    def _list_and_fail(self, key: str) -> None:
        records = backup_records(key)
        if not records:
            raise AirflowFailException(
                f"No backup_id given, and target {self.target_conn_id} has no backups in the store "
                "(migration_execute/migration_sync take one before applying, unless skip_backup)"
            )
        self.log.info("Backups of %s, newest first:", self.target_conn_id)
        for r in records:
            self.log.info("  %s", r.describe())
        listing = "\n".join(f"  {r.describe()}" for r in records)
        raise AirflowFailException(
            f"No backup_id given. {len(records)} backup(s) of {self.target_conn_id}, newest first:\n"
            f"{listing}\nTrigger migration_rollback again with one of these ids as backup_id"
        )
