"""Helpers for the Migrations page tests: Airflow users, the Airflow app, a seeded migration store."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.factories import manifest_table
from tests.pgtools import REPO

# the failed seeded run's approved destructive part (a prod edit)
PROD_EDIT_PART = "changed in prod since the last migration: 3 rows of uiSchemas would be replaced (keys a1, a2, a3)"
USERS = {"admin": ("admin", "admin"), "viewer": ("viewer", "viewer")}  # name -> (password, role)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """Debian's chromium (``MM_CHROMIUM`` overrides), for Playwright's ``executable_path``."""
    found = (
        os.environ.get("MM_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    assert found, "Debian's chromium is needed for the browser test: apt-get install -y chromium"
    return found


def auth_env(folder: Path) -> dict[str, str]:
    """Environment for Airflow's simple auth manager with an admin and a viewer (password = name)."""
    folder.mkdir(parents=True, exist_ok=True)
    passwords = folder / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({name: pw for name, (pw, _) in USERS.items()}))
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{name}:{role}" for name, (_, role) in USERS.items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    }


def api_token(client: Any, user: str) -> str:
    """A JWT of ``user`` (password = name, see USERS) from the API server app's ``/auth/token``."""
    resp = client.post("/auth/token", json={"username": user, "password": user})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["access_token"])


def store_root() -> Path:
    return Path(os.environ["MIGRATION_STORE"].removeprefix("file://"))


def sync_dags() -> None:
    """Parse ``dags/`` and write the DAGs to the metadata database (what the DAG processor does)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(
        dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags", bundle_name="dags-folder"
    )
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)


def migration_archive(
    manifest_id: str, *, rows: int = 3, database: str = "staging", signed: bool = True
) -> bytes:
    """A small valid migration file (one table with data), signed with the session's trusted key."""
    from migration_manager.archive import ArchiveWriter, data_member
    from tests.pgtools import signing_key

    buf = io.BytesIO()
    writer = ArchiveWriter(buf)
    copy = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 64
    with writer.data(data_member(1)) as out:
        out.write(copy)
    data = {
        "member": data_member(1),
        "columns": ["x_uid"],
        "rows": rows,
        "raw_bytes": len(copy),
        "format": "binary",
    }
    writer.finish(
        {
            "format": "migration-manager",
            "format_version": 1,
            "id": manifest_id,
            "created_at": "2026-11-26T11:58:00+00:00",
            "tool_version": "0.1.0",
            "profile": "nocobase",
            "rules": {
                "system": {"default": "profile", "independent": {}},
                "user": {"default": "schema-only", "independent": {}},
            },
            "source": {
                "database": database,
                "server_version": "15.4",
                "app_version": "1.6.0",
                "app_settings": {},
                "schema": "public",
                "table_prefix": "",
            },
            "environment": {"variables": [], "referenced_unknown": []},
            "plugins": [],
            "tables": [
                manifest_table("uiSchemas", "overwrite", data),
                manifest_table("users", "schema-only", None),
            ],
            "units": [{"id": "u1", "tables": ["uiSchemas"], "label": "uiSchemas"}],
            "warnings": [],
            "members": writer.members,
        },
        signing_key() if signed else None,
    )
    return buf.getvalue()


def seed_store(root: Path) -> dict[str, Any]:
    """Two runs (one failed, one successful, with a backup), their migration files and a backup record.

    Returns the seeded ids: ``failed`` and ``success`` as (migration folder, run folder).
    """
    from migration_manager import run_files, store_layout
    from migration_manager.execute.results import UnitResult
    from migration_manager.plan_report import PlanReport
    from migration_manager.report import summarize
    from migration_manager.run_record import Endpoint, MigrationFileInfo
    from migration_manager.run_record_build import RunInfo, Step, build_record, describe_signature
    from migration_manager.signing import Signature
    from migration_manager.step_kinds import StepKind

    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    seeded: dict[str, Any] = {}
    for key, mid, status, target, start in (
        ("failed", "mig-20261126T090000Z-aaaaaa", "failed", "prod", "2026-11-26T09:01:00+00:00"),
        ("success", "mig-20261126T100000Z-bbbbbb", "success", "prod", "2026-11-26T10:01:00+00:00"),
        ("other", "mig-20261126T080000Z-cccccc", "success", "qa", "2026-11-26T08:01:00+00:00"),
    ):
        (files / f"{mid}.zip").write_bytes(migration_archive(mid))
        units = [{"id": "u1", "label": "uiSchemas", "tables": ["uiSchemas"]}]
        report = PlanReport.model_validate(
            {
                "migration_id": mid,
                "migration_file": f"{mid}.zip",
                "units": units,
                "rules": {"uiSchemas": "overwrite", "users": "schema-only"},
                "quiet_tables": [{"table": "users", "rule": "schema-only", "status": "unchanged"}],
                "warnings": [],
            }
        )
        results = (
            []
            if status == "failed"
            else [
                {
                    "unit": "u1",
                    "seconds": 0.8,
                    "tables": [
                        {
                            "table": "uiSchemas",
                            "rule": "overwrite",
                            "status": "applied",
                            "ddl": ['ALTER TABLE public."uiSchemas" ADD COLUMN "x-async" BOOLEAN'],
                            "inserted": 12,
                            "updated": 3,
                            "deleted": 1,
                            "unchanged": 40,
                            "seconds": 0.7,
                            "data_sql": ['COPY "mm_stage" ("x-uid") FROM STDIN (FORMAT binary)'],
                            "inserted_keys": ["a1", "<b2>"],
                            "deleted_keys": ["z9"],
                        }
                    ],
                }
            ]
        )
        t0 = start[:-9]  # "2026-11-26T09:01"
        steps = [
            Step("env_check", "success", start=f"{t0}:00+00:00", end=f"{t0}:01+00:00", attempt=1),
            Step("plan", "success", start=f"{t0}:01+00:00", end=f"{t0}:03+00:00", attempt=1),
            *(
                [
                    Step(
                        "destructive_check",
                        "success",
                        start=f"{t0}:03+00:00",
                        end=f"{t0}:04+00:00",
                        attempt=1,
                        outcome={
                            "parts": [PROD_EDIT_PART],
                            "decision": "approved",
                            "decided_by": "olga",
                        },
                    )
                ]
                if status == "failed"
                else []
            ),
            Step(
                "apply_table",
                "failed" if status == "failed" else "success",
                map_index=0,
                label="uiSchemas",
                start=f"{t0}:04+00:00",
                end=f"{t0}:06+00:00",
                attempt=3 if status == "failed" else 1,
                error="uiSchemas: invalid input syntax for type integer"
                if status == "failed"
                else None,
                failed=status == "failed",
            ),
            Step(
                "collect_logs",
                status,
                start=f"{t0}:07+00:00",
                end=f"{t0}:08+00:00",
                attempt=1,
                failed=status == "failed",
            ),
        ]
        run_id = f"manual__{start}"
        backup_id = f"bk-{mid[4:20]}-{mid[-6:]}"
        record = build_record(
            run=RunInfo(
                dag_id="migration_execute",
                run_id=run_id,
                run_type="manual",
                triggered_by="admin",
                start_date=start,
            ),
            steps=steps,
            report=report,
            summary=summarize(report, [UnitResult.model_validate(r) for r in results]),
            migration_file=MigrationFileInfo(
                name=f"{mid}.zip",
                id=mid,
                sha256="ab" * 32,
                bytes=1234,
                # who signed it: the failed run ran an unsigned file under allow_unsigned
                signature=describe_signature(
                    Signature(status="unsigned")
                    if key == "failed"
                    else Signature(
                        status="verified",
                        signer="release-team",
                        key_id="0123456789abcdef",
                        claimed_signer="ci",
                    ),
                    allow_unsigned=key == "failed",
                ),
            ),
            source=Endpoint(database="staging", app_version="1.6.0"),
            target=Endpoint(conn_id=target, host="db", port=5432, database=target),
            params={"target_conn_id": target},
            checks={
                StepKind.ENV_CHECK: {
                    "settings": {"DB_SCHEMA": "public"},
                    "missing_env": [],
                    "versions": {
                        "source_version": "1.6.0",
                        "target_version": "1.6.0",
                        "differences": [],
                        "allowed": False,
                    },
                },
                StepKind.APP_RESTART: {
                    "status": "restart needed",
                    "after": "migration",
                    "message": "Restart the target application now",
                },
            },
            backup={"backup_id": backup_id, "tables": 2, "rows": 56, "size": 4096},
            ended_at=f"{t0}:08+00:00",
        )
        folder = (
            root / "logs" / store_layout.safe_component(mid) / store_layout.safe_component(run_id)
        )
        run_files.write_files(folder, record)
        seeded[key] = (store_layout.safe_component(mid), store_layout.safe_component(run_id))
        backups = root / "backups" / target
        backups.mkdir(parents=True, exist_ok=True)
        (backups / f"{backup_id}.dump").write_bytes(b"PGDMP")
        (backups / f"{backup_id}.json").write_text(
            json.dumps(
                {
                    "format": "migration-manager-backup",
                    "format_version": 1,
                    "backup_id": backup_id,
                    "created_at": start,
                    "database": target,
                    "server_version": "15.10",
                    "pg_dump_version": "15.10",
                    "size": 4096,
                    "sha256": "cd" * 32,
                    "seconds": 0.4,
                    "fingerprints": {"public.uiSchemas": [40, "x"], "public.users": [16, "y"]},
                    "profile": "nocobase",
                    "app_version": "1.6.0",
                    "migration_id": mid,
                    "run_id": run_id,
                    "target_conn_id": target,
                    "dump_file": f"{backup_id}.dump",
                }
            )
        )
        seeded[f"{key}_backup"] = backup_id
    return seeded


def open_migrations_page(page: Any, base: str, user: str = "admin") -> Any:
    """Log in to the Airflow UI at ``base`` and open **Migrations** from its navigation, the way
    a user does; returns the frame the plugin's page lives in."""
    page.goto(f"{base}/")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(USERS[user][0])
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{base}/")
    page.get_by_role("link", name="Migrations").first.click()
    page.wait_for_url("**/plugin/migrations**")
    return page.frame_locator("iframe").first


def answer_in_required_actions(
    airflow: Any,
    page: Any,
    dag_id: str,
    run_id: str,
    task_id: str,
    subject: str,
    fill: Callable[[Any], None],
    choice: str,
    shots: Path,
) -> str:
    """Once ``task_id`` asks: Browse -> Required Actions, the pending question ``subject``, its
    form filled, ``choice`` clicked, as a person answers. Returns the question's text."""
    from playwright.sync_api import expect

    airflow.wait_until_asking(dag_id, run_id, task_id)
    page.goto(f"{airflow.base}/required_actions?response_received=false")
    link = page.get_by_role("link", name=subject).first
    expect(link).to_be_visible(timeout=60_000)
    link.click()
    button = page.get_by_role("button", name=choice, exact=True)
    expect(button).to_be_visible(timeout=60_000)
    text = str(page.locator("body").inner_text())
    fill(page)
    expect(button).to_be_enabled()
    page.screenshot(path=str(shots / f"question-{task_id}.png"), full_page=True)
    button.click()
    airflow.wait_for_state(dag_id, run_id, task_id, ("success", "failed"), timeout=120)
    return text


def confirm_restore(frame: Any) -> None:
    """The Restore… confirmation dialog of the run and Backups pages: its Restore button."""
    from playwright.sync_api import expect

    dialog = frame.locator("dialog.confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("every change made since the backup was taken is undone")
    dialog.get_by_role("button", name="Restore", exact=True).click()
