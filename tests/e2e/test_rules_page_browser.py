"""The rules page inside a real Airflow UI, in headless Chromium, down to a real sync.

A real Airflow (``bin/airflow-local``: api-server, scheduler, dag-processor, triggerer,
LocalExecutor, metadata DB on the local PostgreSQL) with two connections to the NocoBase fixture
databases: staging as an ``AIRFLOW_CONN_*`` environment variable, prod in the metadata DB (with
prod's AES key in its extra). Debian's ``chromium``, driven by Playwright, logs in, opens
**Migrations** → **New migration**, picks the source and the profile, keeps the system tables on
"each table's default", turns on independent rules for the user-defined tables, finds the
tickets tables with the search box, selects them and bulk-assigns rules (upsert is refused for
``ticketCategories``, with planning's reason), previews the plan against prod, saves the rule set
and clicks **Sync now**. The run asks to approve its destructive plan and for the environment
variables prod lacks: both answered in Airflow's Required actions, in another tab. The run
succeeds, the page lands on the run's page in the Migrations UI, and **Restore…** there puts the
backup taken before the sync back (the README's UI tour, click for click). Screenshots go to
``artifacts/rules-page/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.e2e.airflowapi import Airflow
from tests.pgtools import REPO, rows
from tests.uitools import (
    CHROMIUM_ARGS,
    answer_in_required_actions,
    chromium,
    confirm_restore,
    open_migrations_page,
)

ARTIFACTS = REPO / "artifacts" / "rules-page"
SECRETS = {"HELPDESK_URL": "https://helpdesk.prod.invalid/api", "HELPDESK_KEY": "e2e-secret-value"}


def _prod_state(dsn: str) -> list[Any]:
    """Prod's tables and its users: what the restore must put back."""
    tables = rows(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    return [tables, rows(dsn, "SELECT id, username FROM users ORDER BY id")]


def test_configure_preview_save_and_sync_from_the_rules_page(
    airflow: Airflow, nocobase: dict[str, str]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = ARTIFACTS
    base = airflow.base
    before = _prod_state(nocobase["prod"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        try:
            anonymous = browser.new_context()
            assert anonymous.request.get(f"{base}/migrations/rules").status == 401
            anonymous.close()

            context = browser.new_context(viewport={"width": 1600, "height": 1120})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Migrations (the plugin's entry in the UI's navigation) -> New migration
            frame = open_migrations_page(page, base)
            frame.get_by_role("link", name="New migration").click()
            expect(frame.get_by_role("heading", name="New migration")).to_be_visible(timeout=30_000)

            # the source (an env-var connection) and the profile
            options = frame.locator("#source option").all_text_contents()
            assert any(o.startswith("nocobase_staging (") for o in options), options
            assert any(o.startswith("nocobase_prod (") for o in options), options
            frame.locator("#source").select_option("nocobase_staging")
            frame.locator("#profile").select_option("nocobase")
            frame.locator("#load").click()
            tickets = frame.locator("tr[data-table=tickets]")
            expect(tickets).to_be_visible(timeout=30_000)
            expect(frame.locator(".group-card[data-group=user] tbody tr")).to_have_count(6)
            expect(frame.locator(".group-card[data-group=system] tbody tr")).to_have_count(105)
            expect(tickets.locator(".key")).to_have_text("integer")
            expect(frame.locator("tr[data-table=ticketCategories] .key")).to_have_text("serial")
            expect(frame.locator("tr[data-table=uiSchemas] .now .rule")).to_have_text("overwrite")

            # group defaults; independent rules for the user-defined tables
            frame.locator(".group-default[data-group=system]").select_option("profile")
            frame.locator(".group-default[data-group=user]").select_option("schema-only")
            frame.locator(".group-rule[data-group=user] label.switch").click()

            # a rule ticketCategories cannot take: disabled, with planning's reason
            cats = frame.locator("tr[data-table=ticketCategories]")
            upsert = cats.locator("option[value=upsert]")
            expect(upsert).to_be_disabled()
            assert "is refused for tables with an auto-increment id (id is serial)" in str(
                upsert.get_attribute("title")
            )
            expect(cats.locator(".refused")).to_have_text(
                "No upsert, insert-ignore: auto-increment id (id is serial)"
            )

            # search + multi-select + bulk assign
            frame.locator("#search").fill("ticket")
            expect(frame.locator(".group-card[data-group=user] tbody tr:visible")).to_have_count(2)
            frame.locator(".select-all[data-group=user]").check()
            expect(frame.locator("#selected-count")).to_have_text("2")
            frame.locator("#bulk-rule").select_option("upsert")
            frame.locator("#bulk-assign").click()
            expect(frame.locator("#notice")).to_contain_text("Not assigned")
            expect(frame.locator("#notice")).to_contain_text("ticketCategories: upsert (chosen)")
            expect(cats.locator(".table-rule")).to_have_value("")
            page.screenshot(path=str(shots / "01-refused-rule.png"))
            cats.locator(".pick").uncheck()
            frame.locator("#bulk-rule").select_option("overwrite")
            frame.locator("#bulk-assign").click()
            expect(tickets.locator(".table-rule")).to_have_value("overwrite")
            expect(tickets.locator(".now .rule")).to_have_text("overwrite")
            expect(tickets.locator(".now .source")).to_have_text("independent rule")
            frame.locator("#search").fill("")

            # the plan against prod: what a run would do, rolled back (a migration_sync dry run)
            frame.locator("#target").select_option("nocobase_prod")
            frame.locator("#preview").click()
            summary = frame.locator("#preview-result")
            expect(summary.locator(".figures")).to_be_visible(timeout=300_000)
            expect(summary).to_contain_text("On nocobase_prod:")
            expect(tickets.locator(".on-target")).to_contain_text("+29")
            expect(tickets.locator(".on-target")).to_contain_text("table created")
            # the rules, the user-defined tables and the preview in one view
            frame.locator("body").evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(shots / "02-preview-in-airflow.png"))
            assert rows(nocobase["prod"], "SELECT to_regclass('public.tickets')") == [(None,)]

            # save the rule set
            frame.locator("#rs-name").fill("helpdesk-nightly")
            frame.locator("#rs-description").fill("Helpdesk configuration, staging to prod")
            frame.locator("#save").click()
            expect(frame.locator("#save-status")).to_have_text(
                "Saved as rule_sets/helpdesk-nightly.yaml.", timeout=30_000
            )
            store = Path(str(airflow.home.parent / "store"))
            saved = yaml.safe_load((store / "rule_sets" / "helpdesk-nightly.yaml").read_text())
            assert saved["source_conn_id"] == "nocobase_staging"
            assert saved["rules"] == {
                "system": {"default": "profile", "independent": {}},
                "user": {"default": "schema-only", "independent": {"tickets": "overwrite"}},
            }

            # the whole page on its own, for the record
            alone = context.new_page()
            alone.goto(f"{base}/migrations/rules?rule_set=helpdesk-nightly&target=nocobase_prod")
            expect(alone.locator("#loaded-chip")).to_have_text("rule set helpdesk-nightly")
            expect(alone.locator("tr[data-table=tickets] .table-rule")).to_have_value("overwrite")
            alone.screenshot(path=str(shots / "03-rules-page-full.png"), full_page=True)
            alone.goto(f"{base}/migrations/rules/sets")
            expect(alone.get_by_text("helpdesk-nightly").first).to_be_visible()
            alone.screenshot(path=str(shots / "04-rule-sets.png"))
            alone.close()

            # Sync now: migration_sync through the REST API, then follow the run
            frame.locator("#on-missing-plugins").select_option("continue")
            frame.locator("#on-missing-env").select_option("ask")
            frame.locator("#start-sync").click()
            state = frame.locator("#run-state")
            expect(state).to_be_visible(timeout=30_000)
            every = airflow.call("GET", "/dags/migration_sync/dagRuns")["dag_runs"]
            # the preview above was a dry run of migration_sync; Sync now is the real one
            previews = [r for r in every if (r.get("conf") or {}).get("dry_run")]
            runs = [r for r in every if not (r.get("conf") or {}).get("dry_run")]
            assert len(previews) == 1 and len(runs) == 1, every
            run = runs[0]
            assert run["conf"]["rule_set"] == "helpdesk-nightly"
            assert run["conf"]["target_conn_id"] == "nocobase_prod"
            # the questions, answered in Required actions as a person does (another tab): the
            # system tables' overwrite replaces prod's rows (a destructive plan): approve it;
            # then the environment variables prod lacks
            questions = context.new_page()
            answer_in_required_actions(
                airflow,
                questions,
                "migration_sync",
                run["dag_run_id"],
                "destructive_check",
                "Destructive migration plan",
                lambda _: None,
                "Approve",
                shots,
            )

            def values(form: Any) -> None:
                for name, value in SECRETS.items():
                    form.locator(f"#element_{name}").fill(value)

            answer_in_required_actions(
                airflow,
                questions,
                "migration_sync",
                run["dag_run_id"],
                "env_values",
                "Missing environment variables",
                values,
                "Continue with these values",
                shots,
            )
            questions.close()
            page.screenshot(path=str(shots / "05-run-following.png"))
            assert airflow.wait_for_run("migration_sync", run["dag_run_id"]) == "success", (
                airflow.explain("migration_sync", run["dag_run_id"])
            )

            # landed on the run's page in the Migrations UI
            expect(frame.get_by_role("heading", name="Tables")).to_be_visible(timeout=90_000)
            expect(frame.locator("h1 .badge.s-success")).to_be_visible()
            expect(frame.locator("pre.log")).to_contain_text(": SUCCESS")
            # the tickets row of the Tables card (a packed task's row in Process names it too)
            tickets = frame.locator("tr").filter(
                has=frame.get_by_role("cell", name="tickets", exact=True)
            )
            expect(tickets.first).to_contain_text("overwrite")
            page.screenshot(path=str(shots / "06-run-page.png"))
            assert rows(nocobase["prod"], 'SELECT count(*) FROM "tickets"') == [(29,)]
            assert rows(nocobase["prod"], 'SELECT count(*) FROM "ticketCategories"') == [(0,)]

            # Restore… on the run's page: the backup taken before the sync comes back
            frame.get_by_role("button", name="Restore…").click()
            confirm_restore(frame)
            expect(frame.get_by_role("heading", name="Restoring a backup")).to_be_visible(
                timeout=30_000
            )
            (restore,) = airflow.call("GET", "/dags/migration_rollback/dagRuns")["dag_runs"]
            assert airflow.wait_for_run("migration_rollback", restore["dag_run_id"]) == "success", (
                airflow.explain("migration_rollback", restore["dag_run_id"])
            )
            page.screenshot(path=str(shots / "07-restored.png"))
            assert errors == [], errors
        finally:
            browser.close()

    assert _prod_state(nocobase["prod"]) == before
    assert (shots / "02-preview-in-airflow.png").stat().st_size > 10_000
