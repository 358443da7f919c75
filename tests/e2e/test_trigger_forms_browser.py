"""Airflow's own trigger forms and Required actions, clicked through in headless Chromium.

One real Airflow (``bin/airflow-local``) for the module, its connections ``migration_source``
and ``migration_target`` on a fresh copy of the demo pair (``make demo``'s databases: prod lacks
staging's ``ORDERS_API_URL`` variable and its graph-collection-manager plugin; overwriting the
system tables deletes prod's own users: a destructive plan), and the example pipelines file
(DAG ``sync_staging_to_prod``).

- Every DAG's trigger form opens with its Trigger button enabled where the defaults make a run
  (``migration_execute``: only once ``migration_file`` is filled), and submitting starts a run.
- The question journey: ``migration_sync`` from the form with one rule changed in a dropdown
  (``system_default`` = overwrite, seen in the run's plan), every question answered in Required
  actions (the destructive plan; the missing variable and the missing plugin in one question),
  the run green.

Screenshots of a failing step go to ``artifacts/trigger-forms/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.airflowtools import connection_uri
from tests.e2e.airflowapi import Airflow, running_airflow, wait_for
from tests.pgtools import REPO, drop_database, dsn_for, rows
from tests.uitools import CHROMIUM_ARGS, answer_in_required_actions, chromium

ARTIFACTS = REPO / "artifacts" / "trigger-forms"
PIPELINE_DAG = "sync_staging_to_prod"  # include/pipelines.example.yaml
ORDERS_API_URL = "https://orders.prod.example.invalid/api"


@pytest.fixture(scope="module")
def demo_pair() -> Iterator[dict[str, str]]:
    """A fresh copy of the demo pair under names of its own (``make demo``'s are shared)."""
    import os

    from migration_manager.demo import make_databases

    suffix = uuid.uuid4().hex[:8]
    names = {"staging": f"mm_e2e_forms_staging_{suffix}", "prod": f"mm_e2e_forms_prod_{suffix}"}
    make_databases(os.environ["MM_PG_URL"], names["staging"], names["prod"])
    try:
        yield {role: dsn_for(name) for role, name in names.items()}
    finally:
        for name in names.values():
            drop_database(name)


@pytest.fixture(scope="module")
def airflow(
    demo_pair: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Airflow]:
    env = {
        "AIRFLOW_CONN_MIGRATION_SOURCE": connection_uri(demo_pair["staging"]),
        "MIGRATION_PIPELINES": str(REPO / "include" / "pipelines.example.yaml"),
    }
    with running_airflow(tmp_path_factory.mktemp("trigger-forms"), env=env) as af:
        af.set_connection("migration_target", demo_pair["prod"])
        for dag_id in ("migration_sync", PIPELINE_DAG):
            af.wait_for_dag(dag_id)
        yield af


@contextmanager
def browser_page(name: str) -> Iterator[Any]:
    """A logged-out page of headless Chromium; on failure, a screenshot named ``name``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        try:
            yield page
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / f"{name}-failed.png"), full_page=True)
            (ARTIFACTS / f"{name}-failed.html").write_text(page.content())
            raise
        finally:
            browser.close()


def log_in(page: Any, base: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill("admin")
    page.locator("button[type=submit]").click()
    expect(page.get_by_role("link", name="Migrations").first).to_be_visible(timeout=60_000)


def open_trigger_form(page: Any, base: str, dag_id: str) -> Any:
    """The DAG's page, its Trigger button: the trigger dialog."""
    from playwright.sync_api import expect

    page.goto(f"{base}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible(timeout=30_000)
    return dialog


def trigger_button(dialog: Any) -> Any:
    return dialog.get_by_role("button", name="Trigger", exact=True)


def new_run(airflow: Airflow, dag_id: str, before: set[str]) -> dict[str, Any]:
    """The run the form started (not in ``before``), once the scheduler has it going."""

    def started() -> dict[str, Any] | None:
        for run in airflow.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]:
            if run["dag_run_id"] not in before and run["state"] in (
                "running",
                "success",
                "failed",
            ):
                return dict(run)
        return None

    return dict(wait_for(f"a run of {dag_id} started from the form", started, 180))


def run_ids(airflow: Airflow, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in airflow.call("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]}


def submit(airflow: Airflow, dialog: Any, dag_id: str) -> dict[str, Any]:
    from playwright.sync_api import expect

    before = run_ids(airflow, dag_id)
    expect(trigger_button(dialog)).to_be_enabled()
    trigger_button(dialog).click()
    return new_run(airflow, dag_id, before)


# DAG -> what a user must fill before the Trigger button is enabled (field id -> value)
FORMS: dict[str, dict[str, str]] = {
    "migration_create": {},
    "migration_execute": {"element_migration_file": "no-such-file.zip"},
    "migration_backup": {},
    "migration_rollback": {},
    PIPELINE_DAG: {},
}


def test_every_trigger_form_starts_a_run_with_its_defaults(airflow: Airflow) -> None:
    """Each form: Trigger enabled with the defaults (or once the required field is filled),
    submitted, the run started."""
    from playwright.sync_api import expect

    started: dict[str, str] = {}
    with browser_page("forms") as page:
        log_in(page, airflow.base)
        for dag_id, required in FORMS.items():
            dialog = open_trigger_form(page, airflow.base, dag_id)
            if required:
                expect(trigger_button(dialog)).to_be_disabled()
                for field, value in required.items():
                    dialog.locator(f"#{field}").fill(value)
            expect(trigger_button(dialog)).to_be_enabled()
            page.screenshot(path=str(ARTIFACTS / f"form-{dag_id}.png"))
            run = submit(airflow, dialog, dag_id)
            started[dag_id] = run["dag_run_id"]
            assert run["run_type"] == "manual"
    # what the forms sent: the defaults (None for an optional param left empty)
    execute = airflow.run("migration_execute", started["migration_execute"])
    assert execute["conf"]["migration_file"] == "no-such-file.zip"
    assert execute["conf"]["target_conn_id"] == "migration_target"
    pipeline = airflow.run(PIPELINE_DAG, started[PIPELINE_DAG])
    assert pipeline["conf"]["on_missing_env"] == "fail"  # the pipeline's own defaults
    # let them end before the next test (one target, two cores)
    for dag_id, run_id in started.items():
        airflow.wait_for_run(dag_id, run_id, timeout=600)
    assert airflow.run("migration_create", started["migration_create"])["state"] == "success"
    assert airflow.run("migration_backup", started["migration_backup"])["state"] == "success"


def test_question_journey_from_the_form_to_a_green_run(
    airflow: Airflow, demo_pair: dict[str, str]
) -> None:
    """migration_sync from the form with one rule changed; every question answered in Required
    actions; the run green and the target migrated."""
    from playwright.sync_api import expect

    with browser_page("journey") as page:
        log_in(page, airflow.base)
        dialog = open_trigger_form(page, airflow.base, "migration_sync")
        expect(trigger_button(dialog)).to_be_enabled()
        # one rule in a dropdown: the system tables' default (profile -> overwrite): prod's own
        # users and their roles would be deleted, a destructive plan
        dialog.locator("#element_system_default").click()
        page.get_by_role("option", name="overwrite", exact=True).click()
        run = submit(airflow, dialog, "migration_sync")
        run_id = run["dag_run_id"]
        assert run["conf"]["system_default"] == "overwrite" and run["conf"]["rule_set"] is None

        # 1. the destructive plan: Approve
        asked = answer_in_required_actions(
            airflow,
            page,
            "migration_sync",
            run_id,
            "destructive_check",
            "Destructive migration plan",
            lambda _: None,
            "Approve",
            ARTIFACTS,
        )
        assert "would destroy data" in asked

        # 2. the missing variable and the missing plugin: one question
        def values(p: Any) -> None:
            p.locator("#element_ORDERS_API_URL").fill(ORDERS_API_URL)

        asked = answer_in_required_actions(
            airflow,
            page,
            "migration_sync",
            run_id,
            "env_values",
            "Missing environment variables",
            values,
            "Continue with these values",
            ARTIFACTS,
        )
        assert "ORDERS_API_URL" in asked and "graph-collection-manager" in asked
        state = airflow.wait_for_run("migration_sync", run_id, timeout=600)
        assert state == "success", airflow.explain("migration_sync", run_id)
        page.goto(f"{airflow.base}/dags/migration_sync/runs/{run_id}")
        page.screenshot(path=str(ARTIFACTS / "journey-run.png"))

    # the dropdown's rule is in the run's plan
    report = airflow.call(
        "GET",
        f"/dags/migration_sync/dagRuns/{run_id}/taskInstances/plan/xcomEntries/report",
    )["value"]
    assert report["rules"]["users"] == report["rules"]["uiSchemas"] == "overwrite"
    assert report["rules"]["orders"] == "schema-only"  # the user-defined tables' default
    # nobody was asked twice: plugin_check took the answer given with the values
    decision = airflow.call(
        "GET",
        f"/dags/migration_sync/dagRuns/{run_id}/taskInstances/plugin_check/xcomEntries/return_value",
    )["value"]
    assert decision["decision"] == "continue (prompt)" and decision["decided_by"] == "admin"
    pending = airflow.call(
        "GET", "/dags/~/dagRuns/~/hitlDetails", params={"response_received": False}
    )
    assert pending["total_entries"] == 0, pending
    prod, staging = demo_pair["prod"], demo_pair["staging"]
    users = "SELECT username FROM users ORDER BY id"
    assert rows(prod, users) == rows(staging, users)  # approved: prod's own users replaced
    assert rows(
        prod, "SELECT value FROM \"environmentVariables\" WHERE name = 'ORDERS_API_URL'"
    ) == [(ORDERS_API_URL,)]
