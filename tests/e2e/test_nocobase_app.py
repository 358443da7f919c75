"""The real NocoBase application is the judge: a migrated prod must work in the app itself.

NocoBase 2.2.15 is installed from the npm registry (``bin/nocobase-app-install``, cached in
``~/.cache/migration-manager/nocobase-2.2.15``; without the registry the test fails, it does not
skip). The same API checks run first on staging itself (so the checks are right), then on prod:
the app is started on prod BEFORE the migration, ``migration_sync`` runs with the default rules
and the target connection naming the app (``app_url``), and the checks run against that same
process, which the run restarted (no manual restart).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from migration_manager.nocobase_secrets import nocobase_decrypt
from tests.airflowtools import connection_uri, run_dag, task_states, xcom
from tests.e2e.airflowapi import free_port
from tests.nocobasetools import (
    ADMIN,
    Expected,
    check_app,
    echo_server,
    install,
    running_app,
)
from tests.pgtools import FIXTURES, nocobase_databases, rows, scalar

STAGING_KEY = (FIXTURES / "dev_staging_aes_key.dat").read_bytes()
PROD_KEY = (FIXTURES / "dev_prod_aes_key.dat").read_bytes()
USER_COLLECTIONS = ("ticketCategories", "tags", "tickets", "locations")
PROD_URL = "https://helpdesk.prod.invalid/api/v2"
PROD_SECRET = "fx-prod-helpdesk-key"


@pytest.fixture(scope="module")
def app_dir() -> Path:
    path, seconds = install()
    print(f"\nNocoBase app: {path} (install {seconds} s; 0 = cached)")
    return path


def _db_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?")[0]


def _expected(staging: str, *, users: set[str], env_url: str, secret: str) -> Expected:
    """What staging's configuration looks like, read from staging's database."""
    fields = dict(
        rows(
            staging,
            'SELECT "collectionName", count(*) FROM fields WHERE "collectionName" = ANY(%s) '
            "GROUP BY 1",
            (list(USER_COLLECTIONS),),
        )
    )
    return Expected(
        pages=frozenset(
            r[0]
            for r in rows(staging, 'SELECT title FROM "desktopRoutes" WHERE "parentId" IS NULL')
        ),
        page_uids=frozenset(
            r[0]
            for r in rows(
                staging, 'SELECT "schemaUid" FROM "desktopRoutes" WHERE "schemaUid" IS NOT NULL'
            )
        ),
        flow_model_uids=frozenset(r[0] for r in rows(staging, 'SELECT uid FROM "flowModels"')),
        fields={k: int(v) for k, v in fields.items()},
        roles=frozenset(r[0] for r in rows(staging, "SELECT name FROM roles")),
        users=frozenset(users),
        env_url=env_url,
        secret=secret,
    )


def test_migrated_prod_works_in_the_running_app(
    app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report: dict[str, Any] = {}
    with nocobase_databases() as dbs, echo_server(free_port()) as echo:
        staging, prod = dbs["staging"], dbs["prod"]
        assert _expected(staging, users=set(), env_url="", secret="").pages == {
            "Helpdesk tickets (classic)"
        }

        # 1. the checks hold on staging itself
        with running_app(app_dir, _db_name(staging), STAGING_KEY, free_port(), tmp_path) as app:
            report["staging boot s"] = app.boot_seconds
            report["staging"] = check_app(
                app.client(),
                _expected(
                    staging,
                    users={"nocobase", "dana"},
                    env_url="https://helpdesk.example.invalid/api/v2",
                    secret="fx-staging-helpdesk-key",
                ),
                echo,
            )

        # what prod must show afterwards, read before the checks above wrote records to staging
        expected_prod = _expected(
            staging,
            users={"nocobase", "petra", "quentin", "rita"},
            env_url=PROD_URL,
            secret=PROD_SECRET,
        )
        # staging's check created records in the user collections: prod gets schema-only anyway

        # 2. prod's app runs before, during and after the migration
        with running_app(app_dir, _db_name(prod), PROD_KEY, free_port(), tmp_path) as app:
            report["prod boot s"] = app.boot_seconds
            api = app.client()
            before = {r.get("title") for r in api.get("desktopRoutes:listAccessible", tree="true")}
            assert not before & expected_prod.pages, before  # prod has no Helpdesk page yet

            monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
            target = json.loads(connection_uri(prod, {"APP_AES_SECRET_KEY": PROD_KEY.hex()}))
            target["extra"] |= {
                "app_url": app.url,
                "app_account": ADMIN["account"],
                "app_password": ADMIN["password"],
            }
            monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_TARGET", json.dumps(target))
            started = time.monotonic()
            dag_run = run_dag(
                "migration_sync",
                {
                    "env_values": {"HELPDESK_URL": PROD_URL, "HELPDESK_KEY": PROD_SECRET},
                    "on_missing_plugins": "continue",  # graph-collection-manager: enabled by the sync
                },
            )
            report["migration_sync s"] = round(time.monotonic() - started, 1)
            assert str(dag_run.state) == "success", task_states(dag_run)

            # the run restarted this very process's app, and recorded it
            restart = xcom(dag_run, "app_restart")
            assert restart["status"] == "restarted" and restart["after"] == "migration", restart
            assert restart["went_down"] is True and restart["health"] == "ok", restart
            report["restart"] = restart
            folder = Path(str(xcom(dag_run, "collect_logs")["log"]).removeprefix("file://"))
            text = (folder / "migration.log").read_text()
            assert "App restart       restarted" in text
            assert "Versions          match (application 2.2.15" in text
            env_check = xcom(dag_run, "env_check")
            assert env_check["versions"]["differences"] == []
            assert env_check["versions"]["source_version"] == "2.2.15"

            # the same process answers with staging's configuration: no manual restart
            report["prod"] = check_app(app.client(), expected_prod, echo)

        # the secret is stored as the app stores it: it decrypts with prod's key
        stored = scalar(
            prod, "SELECT value FROM \"environmentVariables\" WHERE name = 'HELPDESK_KEY'"
        )
        assert nocobase_decrypt(stored, PROD_KEY) == PROD_SECRET
        # the through tables that carry the menu and the categories
        assert scalar(prod, 'SELECT count(*) FROM "desktopRoutesUiLayouts"') == 2
        assert scalar(prod, 'SELECT count(*) FROM "collectionCategory"') == 4
    print("\n" + json.dumps(report, indent=1, default=str))
