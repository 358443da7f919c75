"""The Migrations page's runs and backups: the list of migrations, one run, its downloads, backups.

=======  ===========================================  =============================================
GET      ``/``                                        migrations, newest first (``target``, ``status``)
GET      ``/runs/{migration}/{run}``                  one run: process timeline, tables, checks, log
GET      ``/runs/{migration}/{run}/download/{name}``  ``migration.log``, ``migration.json``, ``schema.sql``, ``data.sql``, ``summary.json``
GET      ``/backups``                                 backups of every target, with their metadata
=======  ===========================================  =============================================
"""

from __future__ import annotations

import contextlib
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from migration_manager import run_files, run_log_text, run_record, store_layout
from migration_manager.ui import catalog, charts
from migration_manager.ui.deps import AirflowRoot, Store
from migration_manager.ui.render import not_found, page, send

QUIET = ("unchanged", "skipped")  # tables a run did not change
MEDIA = {
    run_files.RECORD: "application/json",
    run_files.SUMMARY: "application/json",
    run_files.LOG: "text/plain; charset=utf-8",
    run_files.SCHEMA_SQL: "application/sql; charset=utf-8",
    run_files.DATA_SQL: "application/sql; charset=utf-8",
}

router = APIRouter()


@router.get("/", response_class=HTMLResponse, name="index")
def index(request: Request, root: Store, target: str = "", status: str = "") -> HTMLResponse:
    runs = catalog.list_runs(root, target=target or None, status=status or None)
    return page(
        request,
        "index.html",
        active="runs",
        title="Migrations",
        runs=runs,
        targets=catalog.targets(root),
        target=target,
        status=status,
    )


@router.get("/runs/{migration}/{run}", response_class=HTMLResponse, name="run_page")
def run_page(
    request: Request, root: Store, airflow_root: AirflowRoot, migration: str, run: str
) -> HTMLResponse:
    try:
        ref = catalog.RunLogRef.checked(migration, run)
        record = catalog.load_run(root, ref)
        log_text = catalog.log_file(root, ref, run_files.LOG).read_text()
    except catalog.NotFound:
        return not_found(request, f"No migration log {migration}/{run} in the store.")
    file_name = (record.get("migration_file") or {}).get("name") or ""
    try:
        catalog.migration_file(root, file_name)
        file_in_store = True
    except catalog.NotFound:
        file_in_store = False
    steps = record.get("steps") or []
    run_link = (
        f"{airflow_root}/dags/{quote(str(record.get('dag_id')), safe='')}"
        f"/runs/{quote(str(record.get('run_id')), safe='')}"
    )
    return page(
        request,
        "run.html",
        active="runs",
        title=f"Migration {record.get('migration_id') or ''}",
        ref=ref,
        r=record,
        timeline=Markup(charts.timeline_svg(charts.collapse(steps))),
        timeline_full=Markup(charts.timeline_svg(steps))
        if len(charts.collapse(steps)) < len(steps)
        else None,
        changed_tables=[t for t in record.get("tables") or [] if t.get("status") not in QUIET],
        quiet_tables=[t for t in record.get("tables") or [] if t.get("status") in QUIET],
        log_text=log_text,
        file_in_store=file_in_store,
        file_name=file_name,
        run_link=run_link,
        changed=run_record.changed_rows(record),
        endpoint=run_log_text.endpoint,
    )


@router.get("/runs/{migration}/{run}/download/{name}", name="run_download")
def run_download(
    root: Store, migration: str, run: str, name: str, inline: bool = False
) -> Response:
    try:
        ref = catalog.RunLogRef.checked(migration, run)
        path = catalog.log_file(root, ref, name)
    except catalog.NotFound:
        raise HTTPException(404, f"No {name} for migration log {migration}/{run}") from None
    download = name if name != run_files.RECORD else f"{ref.migration}.{ref.run}.json"
    if name in (run_files.LOG, run_files.SCHEMA_SQL, run_files.DATA_SQL):
        download = f"{ref.migration}.{name}"
    return send(path, download, MEDIA[name], inline=inline)


@router.get("/backups", response_class=HTMLResponse, name="backups")
def backups(request: Request, root: Store) -> HTMLResponse:
    items = catalog.list_backups(root)
    for b in items:
        b["log"] = None
        if b.get("migration_id") and b.get("run_id"):
            ref = catalog.RunLogRef(
                store_layout.safe_component(b["migration_id"]),
                store_layout.safe_component(b["run_id"]),
            )
            with contextlib.suppress(catalog.NotFound):
                catalog.run_folder(root, ref)
                b["log"] = f"{ref.migration}/{ref.run}"
    return page(request, "backups.html", active="backups", title="Backups", backups=items)
