"""The DAGs' task ids and XCom keys, defined once: wiring builds the tasks with them, and the
few readers that cannot take an XCom as an argument (callbacks, tasks that run after a failure)
name their source with them."""

from __future__ import annotations

CREATE = "create_migration_file"
ENV_CHECK = "env_check"
PLAN = "plan"
DESTRUCTIVE_CHECK = "destructive_check"
ENV_VALUES = "env_values"
PLUGIN_CHECK = "plugin_check"
HOLD_TARGET_LOCK = "hold_target_lock"
TARGET_LOCKED = "target_locked"
BACKUP = "backup"
ENV_WRITE = "env_write"
APPLY_TABLE = "apply_table"
ROLLBACK = "rollback"
APP_RESTART = "app_restart"
COLLECT_LOGS = "collect_logs"
RESTORE = "restore"

# tasks that write to the target (app_restart: anything written means a restart)
WRITERS = (ENV_WRITE, APPLY_TABLE)

# XCom keys besides the return value
REPORT_KEY = "report"  # plan: the plan report (plan_report.PlanReport)
ROLLBACK_KEY = "rollback"  # rollback: its outcome, also when restoring failed
DESTRUCTIVE_KEY = "destructive"  # destructive_check: its outcome, also when it refused
SKIP_NOTES_KEY = "skip_notes"  # plugin_check: the tasks it had the scheduler skip, and why
