"""Tasks on the target app: ``env_write`` stores the supplied environment variables in it, and
``app_restart``, after a migration (or its rollback) wrote to the target, restarts it.

NocoBase keeps collections, permissions and plugin state in memory, so the running app does not
see what a migration wrote until it restarts. When the target connection's extra names the app
(``app_url`` with ``app_api_token``, or ``app_account`` and ``app_password``), this task asks it
to restart through its HTTP API (``POST /api/app:restart``) and waits for its health check;
otherwise it says plainly, in the task log and the run's log, that the app must be restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.log import mask_secret

from migration_manager import app_control, checks
from migration_manager.airflow import task_ids
from migration_manager.airflow.check_operators import NOTHING_TO_WRITE
from migration_manager.airflow.common import engine_errors, is_dry_run, migration_manifest
from migration_manager.airflow.connections import environment
from migration_manager.airflow.lock_operators import target_write_lock
from migration_manager.airflow.run_log import task_states
from migration_manager.airflow.xcom_models import Json
from migration_manager.step_kinds import Rollback

if TYPE_CHECKING:
    from airflow.sdk import Context

WRITERS = task_ids.WRITERS
MANUAL = (
    "Restart the target application now: it keeps collections, permissions and plugin state in "
    "memory and does not see this migration until it restarts. (Add app_url and app_api_token, "
    "or app_account and app_password, to the target connection's extra to have the run do it.)"
)


class AppRestartOperator(BaseOperator):
    """Restart the target app through its HTTP API when anything was written (or rolled back).

    :param target_conn_id: Airflow connection of the target database (templated); its extra
        may name the app (``app_url`` plus credentials)
    :param rollback: in a migration run, the ``rollback`` task's output (None: it did not roll
        back, or did not run)
    :param restore: in ``migration_rollback``, the ``restore`` task's output (None: no restore)
    """

    template_fields: Sequence[str] = ("target_conn_id", "rollback", "restore")

    def __init__(
        self, *, target_conn_id: str, rollback: Any = None, restore: Any = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.target_conn_id = target_conn_id
        self.rollback = rollback
        self.restore = restore

    def execute(self, context: Context) -> Json:
        ti = context["ti"]
        states = task_states(ti, set(context["dag"].task_ids))
        rollback = self.rollback or {}
        rolled_back = rollback.get("status") == Rollback.ROLLED_BACK
        # migration_rollback: a restore in place changes the database the app serves
        restored = (task_ids.RESTORE, -1) in states and states[(task_ids.RESTORE, -1)] == "success"
        restore = (self.restore or {}) if restored else {}
        in_place = restored and restore.get("mode", "in_place") == "in_place"
        wrote = (
            rolled_back
            or in_place
            or any(
                task in WRITERS and state in ("success", "failed")
                for (task, _index), state in states.items()
            )
        )
        after = "rollback" if rolled_back or in_place else "migration"
        if not wrote:
            self.log.info("Nothing was written to the target: no restart needed")
            return {"status": "not needed", "after": None, "message": "nothing was written"}
        with engine_errors():
            env = environment(self.target_conn_id)
            if env.app is None:
                self.log.warning("%s", MANUAL)
                return {"status": "restart needed", "after": after, "message": MANUAL}
            for secret in (env.app.token, env.app.password):
                if secret:
                    mask_secret(secret)
            self.log.info("Asking the app at %s to restart (after the %s)", env.app.url, after)
            result = app_control.restart(env.app)
        return {"after": after, **result.model_dump(exclude_unset=True)}


class EnvWriteOperator(BaseOperator):
    """Store the supplied environment variables in the target (after the backup, before the tables)."""

    template_fields: Sequence[str] = ("migration_file", "target_conn_id", "env_values")

    def __init__(
        self, *, migration_file: str, target_conn_id: str, env_values: Any = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.migration_file = migration_file
        self.target_conn_id = target_conn_id
        self.env_values = env_values  # env_values' outcome: the rows to write

    def execute(self, context: Context) -> Json:
        if is_dry_run(context):
            self.log.info("Dry run: no environment variable is written")
            return {"written": []}
        supplied = self.env_values or {}
        rows = [tuple(r) for r in supplied.get("rows", [])]
        if not rows:
            self.log.info(NOTHING_TO_WRITE)
            return {"written": []}
        for name, kind, stored in rows:
            if kind == "secret":
                mask_secret(stored, name)
        with engine_errors():
            env = environment(self.target_conn_id)
            with target_write_lock(context, env.dsn, self.log):
                checks.write_values(
                    migration_manifest(self.migration_file).profile, env.dsn, env.app_env, rows
                )
        names = [r[0] for r in rows]
        self.log.info("Wrote environment variables %s into the target", ", ".join(names))
        return {"written": names}
