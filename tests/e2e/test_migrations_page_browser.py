"""The Migrations page inside a real Airflow UI, in headless Chromium.

A real ``airflow api-server`` (simple auth manager, admin:admin, on loopback, the test session's
SQLite metadata DB) serves a migration store filled by real ``dag.test()`` runs: a NocoBase
staging -> prod ``migration_sync`` and a run stopped by the environment check. Debian's
``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it), driven by Playwright's
Python package, logs in, opens **Migrations** from the UI's navigation, opens the migration and
downloads its ``schema.sql``. Screenshots go to ``artifacts/migrations-page/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.airflowtools import connection_uri, metadata_db, run_dag, task_states, xcom
from tests.e2e.airflowapi import free_port
from tests.pgtools import FIXTURES, REPO, create_database, drop_database, dsn_for, load_dump
from tests.uitools import CHROMIUM_ARGS, auth_env, chromium, open_migrations_page

ARTIFACTS = REPO / "artifacts" / "migrations-page"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A migration store with two real runs: a NocoBase sync (success) and one the checks stopped."""
    folder = tmp_path_factory.mktemp("browser-store")
    staging, prod = create_database("staging"), create_database("prod")
    try:
        load_dump(dsn_for(staging), FIXTURES / "dev_staging.sql")
        load_dump(dsn_for(prod), FIXTURES / "dev_prod.sql")
        key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MIGRATION_STORE", folder.as_uri())
            mp.setenv("AIRFLOW_CONN_STAGING", connection_uri(dsn_for(staging)))
            mp.setenv(
                "AIRFLOW_CONN_PROD", connection_uri(dsn_for(prod), {"APP_AES_SECRET_KEY": key})
            )
            synced = run_dag(
                "migration_sync",
                {
                    "source_conn_id": "staging",
                    "target_conn_id": "prod",
                    "env_values": {
                        "HELPDESK_URL": "https://helpdesk.prod.invalid/api",
                        "HELPDESK_KEY": "browser-test-secret-value",
                    },
                    "on_missing_plugins": "continue",
                },
            )
            assert str(synced.state) == "success", task_states(synced)
            uri = xcom(synced, "create_migration_file")
            mp.setenv(
                "AIRFLOW_CONN_PROD", connection_uri(dsn_for(prod), {"DB_TABLE_PREFIX": "nb_"})
            )
            stopped = run_dag(
                "migration_execute", {"migration_file": uri, "target_conn_id": "prod"}
            )
            assert str(stopped.state) == "failed"
        yield {"root": folder, "migration_id": Path(uri).stem, "run_id": synced.run_id}
    finally:
        drop_database(staging)
        drop_database(prod)


@pytest.fixture(scope="module")
def airflow(store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``airflow api-server`` on a free loopback port; its URL. Stopped (its process group) after."""
    metadata_db()
    port = free_port()
    env = {
        **os.environ,
        **auth_env(tmp_path_factory.mktemp("browser-auth")),
        "MIGRATION_STORE": store["root"].as_uri(),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-" + "0123456789abcdef" * 4,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "api-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "airflow"),
                "api-server",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "api-server exited:\n" + log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                "api-server not healthy after 180 s:\n" + log_path.read_text()[-3000:]
            )
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_migrations_page_in_the_airflow_ui(airflow: str, store: dict[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright

    migration_id = store["migration_id"]
    shots = ARTIFACTS
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            # anonymous: the plugin's app answers 401 (it is not public)
            anonymous = browser.new_context()
            assert anonymous.request.get(f"{airflow}/migrations/").status == 401
            anonymous.close()

            context = browser.new_context(
                viewport={"width": 1440, "height": 960}, accept_downloads=True
            )
            page = context.new_page()
            # the Migrations entry of the UI's navigation opens the page inside the UI
            frame = open_migrations_page(page, airflow)
            expect(frame.get_by_role("heading", name="Migrations")).to_be_visible(timeout=30_000)
            expect(frame.get_by_text(migration_id).first).to_be_visible()
            expect(frame.locator(".badge.s-failed").first).to_be_visible()
            page.screenshot(path=str(shots / "01-migrations-in-airflow.png"))

            # open the successful migration
            frame.locator("tr", has=frame.locator(".badge.s-success")).get_by_role(
                "link", name=migration_id
            ).click()
            expect(frame.locator("svg.timeline").first).to_be_visible(timeout=30_000)
            expect(frame.get_by_role("heading", name="Tables")).to_be_visible()
            expect(frame.locator("pre.log")).to_contain_text(f"Migration {migration_id}: SUCCESS")
            page.set_viewport_size({"width": 1440, "height": 1280})
            page.screenshot(path=str(shots / "02-migration-in-airflow.png"))
            page.set_viewport_size({"width": 1440, "height": 960})

            # download its schema SQL
            with page.expect_download() as download_info:
                frame.get_by_role("link", name="schema.sql", exact=True).click()
            download = download_info.value
            saved = shots / "schema.sql"
            download.save_as(saved)
            text = saved.read_text()
            assert download.suggested_filename == f"{migration_id}.schema.sql"
            assert text.startswith("-- Schema (DDL) statements executed on the target, in order")
            assert "ADD COLUMN" in text and "-- Table users:" in text
            from migration_manager.store_layout import safe_component

            stored = (
                store["root"]
                / "logs"
                / migration_id
                / safe_component(store["run_id"])
                / "schema.sql"
            )
            assert text == stored.read_text()

            # the link to the Airflow run opens the run in the UI (the whole window, not the frame)
            frame.get_by_role("link", name="Open the Airflow run").click()
            page.wait_for_url("**/dags/migration_sync/runs/**")
            assert unquote(page.url).endswith(f"/dags/migration_sync/runs/{store['run_id']}")
            expect(page.locator("iframe")).to_have_count(0, timeout=30_000)  # the UI's own page
            expect(page.get_by_text(store["run_id"]).first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(shots / "06-the-airflow-run.png"))

            # another site's form, posted by this logged-in browser: nothing is started or stored
            _cross_site_posts_change_nothing(context, airflow, store)

            # the same page on its own, full length (inside the UI it scrolls in its frame)
            alone = context.new_page()
            for status, name in (
                ("success", "03-migration-page-full.png"),
                ("failed", "03-stopped-run-full.png"),
            ):
                alone.goto(f"{airflow}/migrations/")
                row = alone.locator("tr", has=alone.locator(f".badge.s-{status}"))
                row.get_by_role("link", name=migration_id).click()
                alone.get_by_text("Steps in detail").click()
                alone.screenshot(path=str(shots / name), full_page=True)
            for name, path in (
                ("04-files.png", "/migrations/files"),
                ("05-backups.png", "/migrations/backups"),
            ):
                alone.goto(f"{airflow}{path}")
                alone.screenshot(path=str(shots / name), full_page=True)
            context.close()
        finally:
            browser.close()
    assert (shots / "02-migration-in-airflow.png").stat().st_size > 10_000


EVIL = "http://evil.invalid"


def _cross_site_posts_change_nothing(context: Any, airflow: str, store: dict[str, Any]) -> None:
    """A page on another origin auto-submits forms at the Migrations page (run a file, upload
    one) in the browser that is logged in to Airflow: both are refused, no run starts, no file
    is stored."""
    name = f"{store['migration_id']}.zip"
    forms = {
        "run": f"""<form id="f" method="post" action="{airflow}/migrations/files/{name}/run">
            <input name="target_conn_id" value="prod"></form>
            <script>document.getElementById("f").submit()</script>""",
        "upload": f"""<form id="f" method="post" enctype="multipart/form-data"
            action="{airflow}/migrations/files"><input type="file" name="file"></form>
            <script>
            const data = new DataTransfer();
            data.items.add(new File(["PK not a file"], "evil.zip", {{type: "application/zip"}}));
            const input = document.querySelector("input[type=file]");
            input.files = data.files;
            document.getElementById("f").submit();
            </script>""",
    }
    context.route(
        f"{EVIL}/**",
        lambda route: route.fulfill(
            status=200,
            content_type="text/html",
            body=f"<!doctype html><html><body>{forms[route.request.url.rsplit('/', 1)[-1]]}</body></html>",
        ),
    )
    token = httpx.post(
        f"{airflow}/auth/token", json={"username": "admin", "password": "admin"}, timeout=30
    ).json()["access_token"]
    api = {"Authorization": f"Bearer {token}"}

    def runs() -> int:
        resp = httpx.get(
            f"{airflow}/api/v2/dags/migration_execute/dagRuns", headers=api, timeout=30
        )
        return int(resp.json()["total_entries"]) if resp.status_code == 200 else 0

    files_before = sorted(p.name for p in (store["root"] / "files").iterdir())
    runs_before = runs()
    attacker = context.new_page()
    for what in ("run", "upload"):
        with attacker.expect_response(lambda r: r.request.method == "POST") as answer:
            attacker.goto(f"{EVIL}/{what}")
        response = answer.value
        assert response.url.startswith(f"{airflow}/migrations/"), response.url
        # the browser sent the cookie (then the origin check answers 403) or, with SameSite,
        # did not (401): either way the request did nothing
        assert response.status in (401, 403), (what, response.status)
        if response.status == 403:
            assert "another site (http://evil.invalid)" in response.text()
    attacker.close()
    context.unroute(f"{EVIL}/**")
    assert runs() == runs_before
    assert sorted(p.name for p in (store["root"] / "files").iterdir()) == files_before
