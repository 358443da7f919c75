"""Every DAG imports, parses fast with no database reachable, and has tags, owner and retries."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from migration_manager.destructive import ON_DESTRUCTIVE
from tests.airflowtools import dagbag, get_dag
from tests.pgtools import REPO

ON_PARAMS = ("on_missing_env", "on_missing_plugins", "on_destructive")
DAG_IDS = (
    "migration_create",
    "migration_execute",
    "migration_sync",
    "migration_rollback",
    "migration_backup",
)


def test_no_import_errors() -> None:
    bag = dagbag()
    assert bag.import_errors == {}
    assert set(DAG_IDS) <= set(bag.dag_ids)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_conventions(dag_id: str) -> None:
    dag = get_dag(dag_id)
    assert dag.tags, f"{dag_id} has no tags"
    assert dag.catchup is False
    assert dag.doc_md
    for task in dag.tasks:
        assert task.owner == "migration-manager"
        if task.task_id in ("apply_table", "create_migration_file"):
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"


def test_execute_shape() -> None:
    dag = get_dag("migration_execute")
    assert {t.task_id for t in dag.tasks} >= {
        "env_check",
        "plan",
        "env_values",
        "plugin_check",
        "env_write",
        "apply_table",
        "collect_logs",
    }
    # the checks run before anything writes to the target
    assert dag.get_task("plan").upstream_task_ids == {"env_check"}
    # plugin_check takes the plan's report and env_values' outcome as arguments (XComArgs)
    assert dag.get_task("plugin_check").upstream_task_ids == {"env_values", "plan"}
    assert "plan" in dag.get_task("apply_table").upstream_task_ids
    assert "env_write" in dag.get_task("apply_table").upstream_task_ids
    assert dag.get_task("collect_logs").upstream_task_ids == {
        "apply_table",
        "backup",  # its outcome is an argument
        "rollback",
        "app_restart",
    }
    assert dag.get_task("collect_logs").trigger_rule == "all_done"
    # the running app restarts after the last write and after a rollback, whatever happened
    restart = dag.get_task("app_restart")
    assert restart.upstream_task_ids == {"rollback"}
    assert restart.trigger_rule == "all_done"
    assert "app_restart" in dag.get_task("hold_target_lock").writers
    assert dag.params["allow_version_mismatch"] is False


def test_backup_and_rollback_shape() -> None:
    dag = get_dag("migration_execute")
    # the backup after the plan and the checks, before the first write (env_write, apply_table)
    backup = dag.get_task("backup")
    before = backup.get_flat_relative_ids(upstream=True)
    checks = {"env_check", "plan", "env_values", "plugin_check"} & set(dag.task_ids)
    assert "plan" in checks and checks <= before
    writers = {"env_write", "apply_table", "rollback"} & set(dag.task_ids)
    assert writers <= backup.get_flat_relative_ids(upstream=False)
    assert "backup" in dag.get_task("apply_table").upstream_task_ids
    # the rollback after every unit, before collect
    # (the backup's outcome is an argument)
    assert dag.get_task("rollback").upstream_task_ids == {"apply_table", "backup"}
    assert dag.get_task("rollback").trigger_rule == "all_done"
    # plugin_check has the scheduler skip the backup (skip_backup) and env_write (nothing to
    # write): the writers after them still run unless something upstream failed
    check = dag.get_task("plugin_check")
    assert (check.backup_task, check.env_write_task) == ("backup", "env_write")
    assert {"backup", "env_write", "rollback"} <= set(check.skip_when_idle)
    for task_id in ("env_write", "apply_table"):
        assert dag.get_task(task_id).trigger_rule == "none_failed_min_one_success", task_id
        # ... and wait for the target's lock themselves, not only through the skipped backup
        assert "target_locked" in dag.get_task(task_id).upstream_task_ids, task_id
    assert set(dag.params) >= {"skip_backup", "rollback_on_failure", "backups_to_keep"}
    assert dag.params["rollback_on_failure"] is True and dag.params["skip_backup"] is False
    assert dag.params["backups_to_keep"] == 10
    rollback = get_dag("migration_rollback")
    assert [t.task_id for t in rollback.tasks] == ["restore", "app_restart"]
    assert rollback.get_task("app_restart").upstream_task_ids == {"restore"}
    assert rollback.params.get_param("mode").schema["enum"] == ["in_place", "new_database"]
    assert set(rollback.params) == {
        "target_conn_id",
        "backup_id",
        "mode",
        "new_database_name",
        "force",
    }
    assert "MIGRATION_STORE/backups" in rollback.params.get_param("backup_id").description


def test_sync_shape() -> None:
    dag = get_dag("migration_sync")
    assert dag.get_task("env_check").upstream_task_ids == {"create_migration_file"}
    assert set(dag.params) >= {
        "source_conn_id",
        "profile",
        "rules",
        "target_conn_id",
        "allow_drop",
        "env_values",
        "on_missing_env",
        "on_missing_plugins",
    }


def test_params_render_with_enums() -> None:
    params = get_dag("migration_sync").params
    assert params.get_param("profile").schema["enum"] == ["generic", "nocobase"]
    rules_schema = params.get_param("rules").schema
    system_default = rules_schema["properties"]["system"]["properties"]["default"]["enum"]
    assert "profile" in system_default and "upsert" in system_default
    assert params.get_param("on_missing_env").schema["enum"] == ["ask", "fail"]
    assert params.get_param("on_missing_plugins").schema["enum"] == ["ask", "continue", "fail"]
    assert params.get_param("on_destructive").schema["enum"] == list(ON_DESTRUCTIVE)
    assert all(params.get_param(p).schema["type"] == ["null", "string"] for p in ON_PARAMS)
    assert all(params.get_param(p).description for p in params)


def test_dag_files_parse_without_database() -> None:
    """Import each DAG file in a fresh interpreter with unreachable PostgreSQL: no connection is touched."""
    code = (
        "import importlib.util, sys, time\n"
        "t = time.monotonic()\n"
        f"for name in {DAG_IDS!r}:\n"
        f"    spec = importlib.util.spec_from_file_location(name, '{REPO}/dags/' + name + '.py')\n"
        "    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(time.monotonic() - t)\n"
    )
    env = {
        "AIRFLOW_CONN_MIGRATION_SOURCE": "postgresql://nobody@127.0.0.1:1/none",
        "AIRFLOW_CONN_MIGRATION_TARGET": "postgresql://nobody@127.0.0.1:1/none",
        "MIGRATION_STORE": "file:///nonexistent/store",
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
    }
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert time.monotonic() - started < 120


def test_questions_stop_the_run_when_nobody_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from airflow.sdk.exceptions import AirflowFailException

    from migration_manager.airflow.check_operators import EnvValuesOperator, PluginCheckOperator
    from migration_manager.airflow.wiring import answer_timeout

    for dag_id in ("migration_execute", "migration_sync"):
        dag = get_dag(dag_id)
        for task_id in ("env_values", "plugin_check"):
            assert dag.get_task(task_id).response_timeout == timedelta(hours=24), (dag_id, task_id)
    monkeypatch.setenv("MM_ANSWER_TIMEOUT_HOURS", "0.5")
    assert answer_timeout() == timedelta(minutes=30)
    monkeypatch.setenv("MM_ANSWER_TIMEOUT_HOURS", "0")
    assert answer_timeout() is None
    monkeypatch.setenv("MM_ANSWER_TIMEOUT_HOURS", "a day")
    with pytest.raises(ValueError, match="MM_ANSWER_TIMEOUT_HOURS='a day' is not a number"):
        answer_timeout()

    timed_out = {"error": "timeout", "error_type": "timeout"}
    for cls, asked in (
        (EnvValuesOperator, "missing environment variables"),
        (PluginCheckOperator, "missing plugins"),
    ):
        task = cls(
            task_id="q",
            migration_file="m.zip",
            target_conn_id="t",
            response_timeout=timedelta(hours=2),
        )
        with pytest.raises(
            AirflowFailException, match=f"Nobody answered the question about {asked} within 2:00:00"
        ):
            task.execute_complete({}, timed_out)  # type: ignore[arg-type]


def test_destructive_check_and_notifications_shape() -> None:
    from migration_manager.airflow.notify import MigrationNotifier

    for dag_id in ("migration_execute", "migration_sync"):
        dag = get_dag(dag_id)
        check = dag.get_task("destructive_check")
        # after the plan, before the other questions and every write
        assert check.upstream_task_ids - {"create_migration_file"} == {"plan"}
        assert "env_values" in check.downstream_task_ids
        writers = {"backup", "env_write", "apply_table"}
        assert writers <= check.get_flat_relative_ids(upstream=False)
        assert dag.params["on_destructive"] == "ask" and dag.params["max_delete_ratio"] == 0.1
        for question in ("env_values", "plugin_check", "destructive_check"):
            assert any(isinstance(n, MigrationNotifier) for n in dag.get_task(question).notifiers)
        collect = dag.get_task("collect_logs")
        assert any(isinstance(n, MigrationNotifier) for n in collect.on_failure_callback)
        assert any(isinstance(n, MigrationNotifier) for n in collect.on_success_callback)


def test_rules_param_schema_is_generated_from_the_model() -> None:
    """The trigger form's ``rules`` schema comes from ``config.MigrationRules``: after the DAG is
    serialized (as the UI and the API read it), a triggered conf is refused where the model
    refuses it."""
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    from migration_manager.config import RULES, MigrationRules
    from migration_manager.errors import ConfigError

    dag = DagSerialization.from_dict(DagSerialization.to_dict(get_dag("migration_sync")))
    schema = dag.params.get_param("rules").schema
    assert schema["title"] == "Migration rules (JSON)" and "$ref" not in str(schema)
    assert schema["properties"]["user"]["properties"]["default"]["enum"] == list(RULES)
    assert dag.params.validate()["rules"] == MigrationRules().model_dump()
    good = {"user": {"default": "upsert", "independent": {"orders": "skip"}}}
    assert dag.params.deep_merge({"rules": good}).validate()["rules"] == good
    assert MigrationRules.parse(good).user.independent == {"orders": "skip"}
    for bad in (
        {"user": {"default": "profile"}},
        {"users": {}},
        {"system": {"independent": {"roles": "merge"}}},
        {"user": {"default": "skip", "tables": {}}},
    ):
        with pytest.raises(ParamValidationError, match="Invalid input for param rules"):
            dag.params.deep_merge({"rules": bad}).validate()
        with pytest.raises(ConfigError):
            MigrationRules.parse(bad)
