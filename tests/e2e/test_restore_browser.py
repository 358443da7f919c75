"""Restore a backup as a user does it, in the real Airflow UI (headless Chromium).

A real Airflow (``bin/airflow-local``: api-server, scheduler, dag-processor, triggerer,
LocalExecutor) with the NocoBase fixture pair (staging as an ``AIRFLOW_CONN_*`` variable, prod
in the metadata DB). A ``migration_sync`` staging -> prod runs first (through the REST API: its
trigger form is another test's). Then, in Chromium: **Migrations** -> the sync's run page ->
**Restore…**, the confirmation (Escape cancels it, nothing starts), **Restore** -> the restore
run is followed until it has finished -> the history marks the sync "rolled back" with a link
to the restore run and lists the restore -> **Backups** says when and by which run the backup
was restored -> **Restore…** again from the Backups page, confirmed, finishes. Screenshots go to
``artifacts/restore/`` (a failure's too).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.airflowapi import Airflow
from tests.pgtools import REPO
from tests.uitools import CHROMIUM_ARGS, chromium, confirm_restore, open_migrations_page

ARTIFACTS = REPO / "artifacts" / "restore"
SECRETS = {"HELPDESK_URL": "https://helpdesk.prod.invalid/api", "HELPDESK_KEY": "e2e-secret-value"}


@pytest.fixture(scope="module")
def synced(airflow: Airflow) -> str:
    """A finished staging -> prod sync (with its backup): its run id."""
    airflow.unpause("migration_sync")
    run_id = airflow.trigger(
        "migration_sync",
        {
            "source_conn_id": "nocobase_staging",
            "target_conn_id": "nocobase_prod",
            "env_values": SECRETS,
            "on_missing_plugins": "continue",
            "on_destructive": "continue",
        },
    )
    state = airflow.wait_for_run("migration_sync", run_id, timeout=600)
    assert state == "success", airflow.explain("migration_sync", run_id)
    return run_id


def _fits(frame: Any, table: str) -> None:
    """The table is not wider than its card (no column cut off at this width)."""
    overflow = frame.locator(table).evaluate(
        "t => t.getBoundingClientRect().right - t.closest('.card').getBoundingClientRect().right"
    )
    assert overflow <= 1, f"{table} overflows its card by {overflow} px"


def _restore_runs(airflow: Airflow) -> list[dict[str, Any]]:
    body = airflow.call("GET", "/dags/migration_rollback/dagRuns", params={"limit": 50})
    return list(body["dag_runs"])


def test_restore_from_the_run_page_and_the_backups_page(airflow: Airflow, synced: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = airflow.base
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        step = "login"
        try:
            frame = open_migrations_page(page, base)
            step = "run page"
            frame.locator(f"tr[data-run-id='{synced}'] a.run-id").click()
            restore = frame.get_by_role("button", name="Restore…")
            expect(restore).to_be_visible(timeout=30_000)
            restore.click()
            dialog = frame.locator("dialog.confirm")
            expect(dialog).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "00-confirm.png"))
            dialog.press("Escape")  # cancelled: nothing starts
            expect(dialog).to_be_hidden()
            assert _restore_runs(airflow) == []
            restore.click()
            confirm_restore(frame)
            step = "following the restore"
            expect(frame.get_by_role("heading", name="Restoring a backup")).to_be_visible(
                timeout=30_000
            )
            (first,) = _restore_runs(airflow)
            assert first["triggering_user_name"] == "admin"
            assert first["conf"]["target_conn_id"] == "nocobase_prod"
            expect(frame.locator("#run-state")).to_have_text("success", timeout=300_000)
            expect(frame.locator("#run-message")).to_contain_text("restored and verified")
            page.screenshot(path=str(ARTIFACTS / "01-restore-finished.png"))

            step = "history"
            frame.get_by_role("link", name="The Migrations history").click()
            marked = frame.locator(f"tr[data-run-id='{synced}'] a.badge.s-rolled_back")
            expect(marked).to_have_text("rolled back", timeout=30_000)
            assert first["dag_run_id"].replace(":", "%3A").replace("+", "%2B") in str(
                marked.get_attribute("href")
            )
            restore_row = frame.locator(f"tr[data-run-id='{first['dag_run_id']}']")
            expect(restore_row).to_contain_text("Restore of a backup")
            expect(restore_row).to_contain_text("taken before mig-")
            expect(restore_row).to_contain_text("restored")
            page.screenshot(path=str(ARTIFACTS / "02-history.png"))
            frame.locator(f"tr[data-run-id='{synced}'] a.run-id").click()
            expect(frame.locator("#rolled-back")).to_contain_text(first["dag_run_id"])
            expect(frame.get_by_role("button", name="Restore…")).to_have_count(0)

            step = "backups page"
            frame.locator("nav.tabs a", has_text="Backups").click()
            row = frame.locator("table.grid tbody tr").first
            by = row.locator("td.restored a")
            expect(by).to_have_text("restore run")
            assert str(by.get_attribute("title")).endswith(first["dag_run_id"])
            expect(row.locator("td.restored")).to_contain_text("· admin")
            _fits(frame, "table.grid.backups")
            page.screenshot(path=str(ARTIFACTS / "03-backups.png"))
            row.get_by_role("button", name="Restore…").click()
            confirm_restore(frame)
            expect(frame.get_by_role("heading", name="Restoring a backup")).to_be_visible(
                timeout=30_000
            )
            expect(frame.locator("#run-state")).to_have_text("success", timeout=300_000)
            assert len(_restore_runs(airflow)) == 2
            frame.locator("nav.tabs a", has_text="Backups").click()
            restored = frame.locator("table.grid tbody tr").first.locator("td.restored div")
            expect(restored).to_have_count(2)
            assert not errors, errors
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / f"failure-{step.replace(' ', '-')}.png"))
            raise
        finally:
            browser.close()


def test_migration_files_fit_at_1440_and_rule_choices_are_never_locked(
    airflow: Airflow, synced: str
) -> None:
    """At 1440 px the Migration files table fits its card, one popover opens at a time and
    Escape closes it; on the rules page a per-table rule can be chosen with independent rules
    off, which turns them on and says so."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        step = "login"
        try:
            frame = open_migrations_page(page, airflow.base)
            step = "migration files"
            frame.locator("nav.tabs a", has_text="Migration files").click()
            expect(frame.locator("table.grid.files tbody tr")).not_to_have_count(0)
            _fits(frame, "table.grid.files")
            row = frame.locator("table.grid.files tbody tr").first
            run, preview = row.locator("details.run").nth(0), row.locator("details.run").nth(1)
            run.locator("summary").click()
            expect(run.locator("form.popover")).to_be_visible()
            preview.locator("summary").click()
            expect(preview.locator("form.popover")).to_be_visible()
            expect(run.locator("form.popover")).to_be_hidden()  # one at a time
            page.screenshot(path=str(ARTIFACTS / "10-files-popover.png"))
            page.keyboard.press("Escape")
            expect(preview.locator("form.popover")).to_be_hidden()
            run.locator("summary").click()
            frame.locator("h1").click()  # a click elsewhere closes it too
            expect(run.locator("form.popover")).to_be_hidden()

            step = "rules page"
            frame.locator("nav.tabs a", has_text="New migration").click()
            frame.locator("#source").select_option("nocobase_staging")
            frame.locator("#profile").select_option("nocobase")
            frame.locator("#load").click()
            tickets = frame.locator("tr[data-table=tickets]")
            expect(tickets).to_be_visible(timeout=60_000)
            switch = frame.locator(".group-independent[data-group=user]")
            expect(switch).not_to_be_checked()
            choice = tickets.locator("select.table-rule")
            expect(choice).to_be_enabled()
            choice.select_option("overwrite")
            expect(switch).to_be_checked()
            expect(frame.locator("#notice")).to_contain_text(
                "Independent rules turned on for user-defined tables. tickets gets overwrite."
            )
            expect(tickets).to_have_class(re.compile(r"\bindependent\b"))
            page.screenshot(path=str(ARTIFACTS / "11-rules-choice.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / f"failure-{step.replace(' ', '-')}.png"))
            raise
        finally:
            browser.close()
