"""Nightly sync pipelines: the YAML file, its errors, and the scheduled DAGs built from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from migration_manager.pipelines import PipelineError, load_pipelines, parse_pipelines
from tests.pgtools import REPO

GOOD = {
    "name": "staging_to_prod",
    "source_conn_id": "staging",
    "target_conn_id": "prod",
    "profile": "generic",
    "schedule": "30 1 * * 1-5",
    "rules": {"user": {"default": "overwrite", "independent": {"logs": "skip"}}},
    "options": {
        "skip_backup": True,
        "rollback_on_failure": False,
        "on_missing_plugins": "continue",
        "pool": "prod_units",
    },
}


def _bag(monkeypatch: pytest.MonkeyPatch, path: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MIGRATION_PIPELINES", str(path))
    return DagBag(dag_folder=str(REPO / "dags"))


def _write(tmp_path: Path, *pipelines: dict[str, Any]) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump({"pipelines": list(pipelines)}))
    return path


def test_the_example_file_is_valid() -> None:
    (pipeline,) = load_pipelines(REPO / "include" / "pipelines.example.yaml")
    assert pipeline.dag_id == "sync_staging_to_prod"
    assert pipeline.options.on_missing_env == "fail" and pipeline.options.skip_backup is False


def test_defaults_and_conf() -> None:
    minimal = {k: GOOD[k] for k in ("name", "source_conn_id", "target_conn_id", "schedule")}
    (p,) = parse_pipelines({"pipelines": [minimal]})
    o = p.options
    assert (p.profile, p.pool, o.skip_backup, o.rollback_on_failure) == (
        "nocobase",
        "migration_units",
        False,
        True,
    )
    assert o.on_missing_plugins == o.on_missing_env == "fail"  # nobody answers prompts at night
    assert o.allow_unsigned is False and p.conf()["allow_unsigned"] is False
    (p,) = parse_pipelines({"pipelines": [GOOD]})
    conf = p.conf()
    assert conf["skip_backup"] is True and conf["rollback_on_failure"] is False
    assert conf["rules"]["user"] == {"default": "overwrite", "independent": {"logs": "skip"}}
    assert conf["rules"]["system"]["default"] == "profile"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schedule": "every night"}, "pipeline 'staging_to_prod': key 'schedule'"),
        ({"schedule": "@fortnightly"}, "key 'schedule'"),
        ({"target_conn_id": ""}, "key 'target_conn_id' is required"),
        ({"profile": "wordpress"}, "key 'profile': Unknown profile 'wordpress'"),
        ({"rules": {"user": {"default": "copy"}}}, "key 'rules'.user.default: unknown rule 'copy'"),
        ({"options": {"skip_backup": "yes"}}, "key 'options.skip_backup': 'yes' is not bool"),
        ({"options": {"backup": "yes"}}, "'backup' (now 'skip_backup') 'yes' is not bool"),
        ({"options": {"target_conn_id": "x"}}, "'target_conn_id' belong(s) at the pipeline's top"),
        (
            {"options": {"allow_unsigned": "true"}},
            "key 'options.allow_unsigned': 'true' is not bool",
        ),
        ({"options": {"allow_unsigned": 1}}, "key 'options.allow_unsigned': 1 is not bool"),
        ({"options": {"on_missing_env": "continue"}}, "key 'options.on_missing_env'"),
        ({"options": {"retries": 3}}, "key 'options.retries' is unknown"),
        ({"target": "prod"}, "unknown key(s) 'target'"),
        ({"name": "staging to prod"}, "key 'name'"),
    ],
)
def test_errors_name_the_pipeline_and_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipelines({"pipelines": [{**GOOD, **change}]}, source="pipelines.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("pipelines.yaml: pipeline")


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(PipelineError, match="used by an earlier pipeline"):
        parse_pipelines({"pipelines": [GOOD, GOOD]})


def test_pipeline_dags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = {
        **GOOD,
        "name": "qa_refresh",
        "schedule": "@daily",
        "options": {"allow_unsigned": True},
    }
    bag = _bag(monkeypatch, _write(tmp_path, GOOD, other))
    assert bag.import_errors == {}
    dag = bag.dags["sync_staging_to_prod"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert "30 1 * * 1-5" in str(dag.timetable)
    assert "pipeline" in dag.tags
    assert dag.params["source_conn_id"] == "staging" and dag.params["target_conn_id"] == "prod"
    assert dag.params["on_missing_plugins"] == "continue" and dag.params["skip_backup"] is True
    assert dag.params["rules"]["user"]["default"] == "overwrite"
    # the trigger form still validates against the same schema
    assert dag.params.get_param("on_missing_plugins").schema["enum"] == ["ask", "continue", "fail"]
    assert dag.get_task("apply_table").pool == "prod_units"
    # allow_unsigned: off unless the pipeline says so; the param stays a boolean for the form
    assert dag.params["allow_unsigned"] is False
    assert dag.params.get_param("allow_unsigned").schema["type"] == ["null", "boolean"]
    assert bag.dags["sync_qa_refresh"].params["allow_unsigned"] is True
    assert {"hold_target_lock", "target_locked", "create_migration_file"} <= set(dag.task_ids)
    assert bag.dags["sync_qa_refresh"].get_task("apply_table").pool == "migration_units"
    assert "@daily" in str(bag.dags["sync_qa_refresh"].timetable) or "0 0 * * *" in str(
        bag.dags["sync_qa_refresh"].timetable
    )


def test_invalid_file_is_an_import_error_of_that_file_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = {**GOOD, "name": "nightly", "options": {"on_missing_plugins": "maybe"}}
    bag = _bag(monkeypatch, _write(tmp_path, bad))
    assert list(bag.import_errors) == [str(REPO / "dags" / "migration_pipelines.py")]
    error = next(iter(bag.import_errors.values()))
    assert "pipeline 'nightly': key 'options.on_missing_plugins'" in error
    assert {"migration_create", "migration_execute", "migration_sync"} <= set(bag.dag_ids)


def test_missing_file_is_an_import_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bag = _bag(monkeypatch, tmp_path / "nope.yaml")
    assert "nope.yaml does not exist" in next(iter(bag.import_errors.values()))


def test_no_file_no_pipeline_dags(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("MIGRATION_PIPELINES", raising=False)
    bag = DagBag(dag_folder=str(REPO / "dags" / "migration_pipelines.py"))
    assert bag.import_errors == {} and bag.dag_ids == []


def test_parsing_touches_no_database(tmp_path: Path) -> None:
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('p', '{REPO}/dags/migration_pipelines.py')\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "print(sorted(k for k in vars(mod) if k.startswith('sync_')))\n"
    )
    env = {
        "MIGRATION_PIPELINES": str(_write(tmp_path, GOOD)),
        "AIRFLOW_CONN_STAGING": "postgresql://nobody@127.0.0.1:1/none",
        "AIRFLOW_CONN_PROD": "postgresql://nobody@127.0.0.1:1/none",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://nobody@127.0.0.1:1/none",
        "MIGRATION_STORE": "file:///nonexistent/store",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sync_staging_to_prod" in out.stdout


def test_safety_options() -> None:
    """on_destructive, notifications and retention: pipeline defaults, values, errors naming the key."""
    minimal = {k: GOOD[k] for k in ("name", "source_conn_id", "target_conn_id", "schedule")}
    (p,) = parse_pipelines({"pipelines": [minimal]})
    o = p.options
    assert o.on_destructive == "fail"  # nobody approves at night
    assert (o.max_delete_ratio, o.files_to_keep, o.logs_to_keep) == (0.1, 20, 100)
    assert o.notify_conn_id is None and o.notify_events == (
        "failure",
        "rollback",
        "question",
        "refused",
    )
    options = {
        "on_destructive": "continue",
        "max_delete_ratio": 0.5,
        "notify_conn_id": "smtp_alerts",
        "notify_to": ["ops@example.com"],
        "notify_events": ["failure", "success"],
        "files_to_keep": 3,
        "logs_to_keep": 0,
    }
    (p,) = parse_pipelines({"pipelines": [{**minimal, "options": options}]})
    conf = p.conf()
    assert {k: conf[k] for k in options} == options
    for bad, message in (
        ({"on_destructive": "ask-twice"}, "key 'options.on_destructive'"),
        (
            {"max_delete_ratio": 2},
            "key 'options.max_delete_ratio': max_delete_ratio 2.0 is outside 0..1",
        ),
        (
            {"notify_events": ["failure", "boom"]},
            "key 'options.notify_events': notify_events: unknown event(s) 'boom'",
        ),
        ({"notify_to": ["not an address"]}, "key 'options.notify_to'"),
        ({"files_to_keep": -1}, "key 'options.files_to_keep': files_to_keep must be 0"),
        ({"logs_to_keep": True}, "key 'options.logs_to_keep'"),
    ):
        with pytest.raises(PipelineError) as info:
            parse_pipelines({"pipelines": [{**minimal, "options": bad}]}, source="p.yaml")
        assert message in str(info.value)


def test_old_option_names_are_read_with_a_deprecation_warning() -> None:
    """``backup``/``rollback`` of earlier files: read as ``skip_backup``/``rollback_on_failure``."""
    minimal = {k: GOOD[k] for k in ("name", "source_conn_id", "target_conn_id", "schedule")}
    with pytest.warns(DeprecationWarning, match="write skip_backup: true"):
        (p,) = parse_pipelines(
            {"pipelines": [{**minimal, "options": {"backup": False, "rollback": False}}]}
        )
    assert p.conf()["skip_backup"] is True and p.conf()["rollback_on_failure"] is False
    with pytest.raises(PipelineError, match="give 'skip_backup' only"):
        parse_pipelines(
            {"pipelines": [{**minimal, "options": {"backup": False, "skip_backup": True}}]}
        )


def test_every_run_option_is_a_pipeline_option() -> None:
    """One vocabulary: a pipeline may set any option of migration_sync, by the param's name."""
    from migration_manager.pipelines import OPTIONS
    from migration_manager.run_options import INPUTS, RunOptions

    assert set(OPTIONS) == (set(RunOptions.model_fields) - set(INPUTS)) | {"pool"}
    minimal = {k: GOOD[k] for k in ("name", "source_conn_id", "target_conn_id", "schedule")}
    options = {"backups_to_keep": 3, "target_lock_timeout": 60, "allow_version_mismatch": True}
    (p,) = parse_pipelines({"pipelines": [{**minimal, "options": options}]})
    assert {k: p.conf()[k] for k in options} == options
