"""Pre-flight checks in migration_sync/migration_execute, through ``dag.test()`` on the real NocoBase fixture.

Prod lacks staging's HELPDESK_URL (plain) and HELPDESK_KEY (secret) variables and the
graph-collection-manager plugin.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import answer_when_asked, run_dag, task_states
from tests.integration.dagrun_tools import (
    HELPDESK_SECRET,
    HELPDESK_URL,
    PROD_KEY,
    connect_nocobase_pair,
)
from tests.pgtools import rows, tables_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]


def _env_rows(dsn: str) -> dict[str, tuple[str, str]]:
    return {
        r[0]: (r[1], r[2])
        for r in rows(dsn, 'SELECT name, type, value FROM "environmentVariables"')
    }


def _decrypt(stored: str) -> str:
    from migration_manager.nocobase_secrets import nocobase_decrypt

    return nocobase_decrypt(stored, PROD_KEY)


def _assert_secret_nowhere(secret: str) -> None:
    """Not in any log file, XCom, rendered field or migration file of this test session.

    (The metadata database itself holds the run conf and the prompt's answer, as Airflow stores them.)
    """
    home = Path(os.environ["AIRFLOW_HOME"])
    hits = []
    for path in home.rglob("*"):
        if (
            path.is_file()
            and not path.name.startswith("airflow.db")
            and secret.encode() in path.read_bytes()
        ):
            hits.append(str(path))
    assert hits == [], f"secret found in {hits}"
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for (value,) in session.query(XComModel.value):
            assert secret not in str(value)
        for (fields,) in session.query(RenderedTaskInstanceFields.rendered_fields):
            assert secret not in str(fields)
    for zipped in home.rglob("*.zip"):
        assert secret.encode() not in zipped.read_bytes()


def test_env_mismatch_stops_before_any_write(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod, {"DB_TABLE_PREFIX": "nb_"})
    before = tables_text(prod)
    dag_run = run_dag("migration_sync", {"on_missing_plugins": "continue"})
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["env_check"] == ["failed"]
    assert states["plan"] == ["upstream_failed"]
    assert all(s == "upstream_failed" for s in states["env_write"])
    assert tables_text(prod) == before


def test_values_from_params_land_in_prod(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    conf: dict[str, Any] = {
        "env_values": {"HELPDESK_URL": HELPDESK_URL, "HELPDESK_KEY": HELPDESK_SECRET},
        "on_missing_plugins": "continue",
    }
    dag_run = run_dag("migration_sync", conf)
    assert str(dag_run.state) == "success", task_states(dag_run)
    stored = _env_rows(prod)
    assert stored["HELPDESK_URL"] == ("default", HELPDESK_URL)
    kind, value = stored["HELPDESK_KEY"]
    assert kind == "secret" and value != HELPDESK_SECRET
    assert _decrypt(value) == HELPDESK_SECRET  # decrypts with prod's key, as NocoBase would
    # conf is the one place the value was given; it must not leak into logs, XCom or files
    _assert_secret_nowhere(HELPDESK_SECRET)


def test_secrets_by_reference_are_resolved_in_the_task_and_never_in_the_conf(
    nocobase_pair: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """env_values names an Airflow Variable (the secret) and a connection (its password): the
    run's conf holds only the names; the values land in prod, the secret encrypted."""
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    secret = "by-reference-9d2e71c4b0"
    url = "https://helpdesk.by-connection.invalid/api"
    monkeypatch.setenv("AIRFLOW_VAR_HELPDESK_KEY_PROD", secret)
    monkeypatch.setenv(
        "AIRFLOW_CONN_HELPDESK_URL_PROD", json.dumps({"conn_type": "generic", "password": url})
    )
    conf: dict[str, Any] = {
        "env_values": {
            "HELPDESK_URL": {"connection": "helpdesk_url_prod"},
            "HELPDESK_KEY": {"variable": "helpdesk_key_prod"},
        },
        "on_missing_plugins": "continue",
    }
    dag_run = run_dag("migration_sync", conf)
    task_log = "".join(capfd.readouterr())  # dag.test() prints the tasks' logs
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert secret not in json.dumps(dag_run.conf)
    stored = _env_rows(prod)
    assert stored["HELPDESK_URL"] == ("default", url)
    kind, value = stored["HELPDESK_KEY"]
    assert kind == "secret" and _decrypt(value) == secret
    assert "Values for HELPDESK_KEY, HELPDESK_URL supplied" in task_log
    assert "given as a literal value" not in task_log
    _assert_secret_nowhere(secret)


def test_a_literal_secret_is_warned_about_in_the_run_log(
    nocobase_pair: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A reference to a Variable that does not exist stops the run naming both; a literal secret warns."""
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = tables_text(prod)
    conf: dict[str, Any] = {
        "env_values": {
            "HELPDESK_URL": {"variable": "no_such_variable"},
            "HELPDESK_KEY": HELPDESK_SECRET,
        },
        "on_missing_plugins": "continue",
    }
    dag_run = run_dag("migration_sync", conf)
    task_log = "".join(capfd.readouterr())
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["env_values"] == ["failed"]
    assert "Secret HELPDESK_KEY was given as a literal value in env_values" in task_log
    assert "env_values['HELPDESK_URL']: the variable 'no_such_variable' does not exist" in task_log
    assert tables_text(prod) == before


def test_values_answered_through_the_prompt(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    secret = HELPDESK_SECRET + "-prompted"
    # the missing plugin is asked in the same question as the values: one answer for both
    env_answer = answer_when_asked(
        "migration_sync",
        "env_values",
        ["Continue with these values"],
        {"HELPDESK_URL": HELPDESK_URL, "HELPDESK_KEY": secret},
        user="olga",
    )
    dag_run = run_dag("migration_sync")
    assert env_answer.error is None and env_answer.answered
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert _decrypt(_env_rows(prod)["HELPDESK_KEY"][1]) == secret
    assert _env_rows(prod)["HELPDESK_URL"] == ("default", HELPDESK_URL)
    from tests.airflowtools import xcom

    decision = xcom(dag_run, "plugin_check")
    assert decision["decision"] == "continue (prompt)" and decision["decided_by"] == "olga"
    assert [p["name"] for p in decision["missing"]] == ["graph-collection-manager"]
    _assert_secret_nowhere(secret)


def test_stop_in_the_question_for_values_and_plugins(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one question for the missing values and plugins also offers to stop: nothing written,
    plugin_check never asks."""
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = tables_text(prod)
    answer = answer_when_asked(
        "migration_sync",
        "env_values",
        ["Stop the migration"],
        {"HELPDESK_URL": HELPDESK_URL, "HELPDESK_KEY": HELPDESK_SECRET},
        user="olga",
    )
    dag_run = run_dag("migration_sync")
    assert answer.error is None and answer.answered
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["env_values"] == ["failed"] and states["plugin_check"] == ["upstream_failed"]
    assert tables_text(prod) == before


def test_on_missing_env_fail(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = tables_text(prod)
    dag_run = run_dag(
        "migration_sync", {"on_missing_env": "fail", "env_values": {"HELPDESK_URL": HELPDESK_URL}}
    )
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["env_values"] == ["failed"]
    assert tables_text(prod) == before


@pytest.mark.parametrize(("mode", "answer"), [("fail", None), ("ask", "Stop the migration")])
def test_missing_plugins_stop(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch, mode: str, answer: str | None
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = tables_text(prod)
    thread = answer_when_asked("migration_sync", "plugin_check", [answer]) if answer else None
    dag_run = run_dag(
        "migration_sync",
        {
            "on_missing_plugins": mode,
            "env_values": {"HELPDESK_URL": HELPDESK_URL, "HELPDESK_KEY": HELPDESK_SECRET},
        },
    )
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["plugin_check"] == ["failed"]
    if thread is not None:
        assert thread.error is None and thread.answered
    assert tables_text(prod) == before


def test_missing_plugins_continue(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    dag_run = run_dag(
        "migration_sync",
        {
            "on_missing_plugins": "continue",
            "env_values": {"HELPDESK_URL": HELPDESK_URL, "HELPDESK_KEY": HELPDESK_SECRET},
        },
    )
    assert str(dag_run.state) == "success", task_states(dag_run)
    from tests.airflowtools import xcom

    assert xcom(dag_run, "plugin_check")["decision"] == "continue (on_missing_plugins=continue)"


def test_env_values_into_a_table_not_shaped_as_the_app_s_fail_clearly(
    nocobase_pair: tuple[str, str], tmp_path: Path
) -> None:
    """A target whose environmentVariables lacks NocoBase's columns: a message, nothing written."""
    from migration_manager import checks
    from migration_manager.archive import open_archive
    from migration_manager.errors import ApplyError
    from tests.pgtools import make_file, sql

    staging, prod = nocobase_pair
    make_file(staging, tmp_path / "m.zip", profile="nocobase")
    with open_archive(tmp_path / "m.zip") as reader:
        manifest = reader.manifest
    sql(prod, 'ALTER TABLE "environmentVariables" DROP COLUMN "createdAt"')
    before = _env_rows(prod)
    with pytest.raises(
        ApplyError,
        match=r"environment variables HELPDESK_URL into the target failed \(column \"createdAt\".*"
        r"nothing was written.*not shaped as the nocobase profile expects",
    ):
        checks.write_values(manifest.profile, prod, {}, [("HELPDESK_URL", "default", HELPDESK_URL)])
    assert _env_rows(prod) == before
