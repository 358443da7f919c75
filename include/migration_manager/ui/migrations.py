"""The Migrations page's runs and backups: the list of migrations, one run, its downloads, backups.

=======  ===========================================  =============================================
GET      ``/``                                        migrations, newest first (``target``, ``status``)
GET      ``/runs/{migration}/{run}``                  one run: process timeline, tables, checks, log
GET      ``/runs/{migration}/{run}/download/{name}``  ``migration.log``, ``migration.json``, ``schema.sql``, ``data.sql``, ``summary.json``
GET      ``/backups``                                 backups of every target, with their metadata and restores
POST     ``/backups/restore``                         Restore: trigger ``migration_rollback`` of a backup (REST API, as the user)
=======  ===========================================  =============================================
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import BaseModel

from migration_manager import run_files, store_layout
from migration_manager.backup.record import BackupRecord, RestoreRecord
from migration_manager.ui import catalog, charts
from migration_manager.ui.deps import AirflowRoot, Api, Base, Store, write_access
from migration_manager.ui.render import not_found, page, send
from migration_manager.ui.rule_config import message_of
from migration_manager.ui.rule_runs import ROLLBACK_DAG, trigger

QUIET = ("unchanged", "skipped")  # tables a run did not change
MEDIA = {
    run_files.RECORD: "application/json",
    run_files.SUMMARY: "application/json",
    run_files.LOG: "text/plain; charset=utf-8",
    run_files.SCHEMA_SQL: "application/sql; charset=utf-8",
    run_files.DATA_SQL: "application/sql; charset=utf-8",
}

router = APIRouter()
WRITE = write_access()


def restore_run_url(base: str, run_id: str) -> str:
    """Where a restore run is followed (the pages' run view, Airflow's REST API)."""
    return f"{base}/rules/runs/{ROLLBACK_DAG}/{quote(run_id, safe='')}"


def _undone(restores: list[RestoreRecord]) -> dict[str, RestoreRecord]:
    """By run id: the newest restore that undid the run (restored the backup it took)."""
    out: dict[str, RestoreRecord] = {}
    for r in restores:  # newest first
        if r.undid_run_id:
            out.setdefault(r.undid_run_id, r)
    return out


@router.get("/", response_class=HTMLResponse, name="index")
def index(request: Request, root: Store, target: str = "", status: str = "") -> HTMLResponse:
    runs = catalog.list_runs(root, target=target or None, status=status or None)
    restores = catalog.list_restores(root)
    # the history: migration runs and restores, newest first (a restore is always a success)
    history: list[tuple[str, str, Any]] = [("run", e.started_at or "", e) for e in runs]
    history += [
        ("restore", r.restored_at, r)
        for r in restores
        if (not target or target == r.target_conn_id) and status in ("", "success")
    ]
    history.sort(key=lambda h: h[1], reverse=True)
    return page(
        request,
        "index.html",
        active="runs",
        title="Migrations",
        history=[(kind, item) for kind, _when, item in history],
        undone=_undone(restores),
        restore_url=restore_run_url,
        targets=sorted({*catalog.targets(root), *(r.target_conn_id for r in restores)}),
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
    file_name = (record.migration_file.name if record.migration_file else None) or ""
    try:
        catalog.migration_file(root, file_name)
        file_in_store = True
    except catalog.NotFound:
        file_in_store = False
    backup_id = record.backup.backup_id if record.backup else None
    target_conn_id = (record.target.conn_id if record.target else None) or ""
    restorable = None
    if backup_id and target_conn_id and not record.dry_run:
        with contextlib.suppress(catalog.NotFound):
            restorable = catalog.find_backup(root, target_conn_id, backup_id)
    run_link = (
        f"{airflow_root}/dags/{quote(str(record.dag_id), safe='')}"
        f"/runs/{quote(str(record.run_id), safe='')}"
    )
    bars = charts.collapse(record.steps)
    return page(
        request,
        "run.html",
        active="runs",
        title=f"Migration {record.migration_id or ''}",
        ref=ref,
        r=record,
        timeline=Markup(charts.timeline_svg(bars)),
        timeline_full=Markup(charts.timeline_svg([charts.Bar.of(s) for s in record.steps]))
        if len(bars) < len(record.steps)
        else None,
        changed_tables=[t for t in record.tables if t.status not in QUIET],
        quiet_tables=[t for t in record.tables if t.status in QUIET],
        log_text=log_text,
        file_in_store=file_in_store,
        file_name=file_name,
        run_link=run_link,
        restorable=restorable,
        restored_by=_undone(catalog.list_restores(root)).get(str(record.run_id)),
        restore_url=restore_run_url,
        changed=record.totals.changed,
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
    restores = catalog.list_restores(root)
    items = [
        b.model_copy(
            update={
                "restores": tuple(
                    r
                    for r in restores
                    if r.backup_id == b.record.backup_id and r.target_conn_id == b.target_conn_id
                ),
                "log": _log_of(root, b.record),
            }
        )
        for b in catalog.list_backups(root)
    ]
    return page(
        request,
        "backups.html",
        active="backups",
        title="Backups",
        backups=items,
        restore_url=restore_run_url,
    )


def _log_of(root: Any, record: BackupRecord) -> str | None:
    """The log (``<migration>/<run>``) of the migration that took a backup, if the store has it."""
    if not (record.migration_id and record.run_id):
        return None
    ref = catalog.RunLogRef(
        store_layout.safe_component(record.migration_id),
        store_layout.safe_component(record.run_id),
    )
    try:
        catalog.run_folder(root, ref)
    except catalog.NotFound:
        return None
    return f"{ref.migration}/{ref.run}"


class RestoreForm(BaseModel):
    """The Restore action: a stored backup, into the target it was taken of (in place)."""

    target_conn_id: str
    backup_id: str


@router.post("/backups/restore", name="backup_restore", dependencies=WRITE)
def backup_restore(
    request: Request,
    api: Api,
    root: Store,
    base: Base,
    form: Annotated[RestoreForm, Form()],
) -> Response:
    """Trigger ``migration_rollback`` (in place) as the signed-in user, then follow its run."""
    try:
        catalog.find_backup(root, form.target_conn_id, form.backup_id)
    except catalog.NotFound as exc:
        return not_found(request, str(exc))
    conf = {"target_conn_id": form.target_conn_id, "backup_id": form.backup_id, "mode": "in_place"}
    note = f"Restore of backup {form.backup_id} into {form.target_conn_id} from the Migrations page"
    try:
        run_id, _unpaused = trigger(api, ROLLBACK_DAG, conf, note=note)
    except HTTPException as exc:
        return page(
            request,
            "error.html",
            exc.status_code,
            title=f"{ROLLBACK_DAG} was not triggered",
            message=message_of(exc),
        )
    return RedirectResponse(restore_run_url(base, run_id), 303)
