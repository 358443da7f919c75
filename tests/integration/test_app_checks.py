"""The app around the database, through real DAG runs on the NocoBase fixture pair: the version
pre-flight stops a migration between different versions before anything is written (unless
allow_version_mismatch), and a target connection without app_url gets a plain "restart the app"
in the run's log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from migration_manager.store_layout import safe_component
from tests.airflowtools import connection_uri, run_dag, set_connections, task_states, xcom
from tests.pgtools import FIXTURES, scalar, sql

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.slow]

CONF = {
    "env_values": {"HELPDESK_URL": "https://helpdesk.prod.invalid", "HELPDESK_KEY": "prod-key"},
    "on_missing_plugins": "continue",
}


def _run_log(dag_run: Any) -> str:
    root = Path(os.environ["MIGRATION_STORE"].removeprefix("file://")) / "logs"
    found = sorted(root.glob(f"*/{safe_component(dag_run.run_id)}/migration.log"))
    assert found, f"no run log for {dag_run.run_id}"
    return found[-1].read_text()


def test_different_versions_stop_the_run_unless_allowed(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    sql(prod, "UPDATE \"applicationVersion\" SET value = '2.2.14'")
    sql(prod, "UPDATE \"applicationPlugins\" SET version = '2.2.14' WHERE name = 'acl'")
    set_connections(monkeypatch, migration_source=staging)
    prod_key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MIGRATION_TARGET", connection_uri(prod, {"APP_AES_SECRET_KEY": prod_key})
    )

    refused = run_dag("migration_sync", CONF)
    assert str(refused.state) == "failed"
    states = task_states(refused)
    assert states["env_check"] == ["failed"]
    assert states["backup"] != ["success"] and states["apply_table"] != ["success"]
    # nothing was written
    assert scalar(prod, 'SELECT count(*) FROM "desktopRoutes"') == 0
    assert scalar(prod, 'SELECT count(*) FROM "environmentVariables"') == 0
    text = _run_log(refused)
    assert "application: source 2.2.15, target 2.2.14" in text
    assert "acl: source 2.2.15, target 2.2.14" in text
    assert "allow_version_mismatch" in text

    allowed = run_dag("migration_sync", {**CONF, "allow_version_mismatch": True})
    assert str(allowed.state) == "success", task_states(allowed)
    versions = xcom(allowed, "env_check")["versions"]
    assert versions["allowed"] is True
    assert {d["name"] for d in versions["differences"]} == {"application", "acl"}
    assert scalar(prod, 'SELECT count(*) FROM "desktopRoutes"') == 2
    assert scalar(prod, 'SELECT count(*) FROM "desktopRoutesUiLayouts"') == 2
    # no app_url in the target connection: the run says plainly that the app must restart
    restart = xcom(allowed, "app_restart")
    assert restart["status"] == "restart needed" and restart["after"] == "migration"
    text = _run_log(allowed)
    assert "Versions          differ, allowed by allow_version_mismatch" in text
    assert "App restart       RESTART THE TARGET APP: Restart the target application now" in text
    # the source has an attachment: the storage folder is not in the database
    assert "storage/ folder" in text
