"""The Migrations page's migration files: list, upload, download, delete, run, preview.

=======  ===========================================  =============================================
GET      ``/files``                                   migration files in the store
GET      ``/files/{name}``                            download one
POST     ``/files``                                   upload one (verified before it is stored)
POST     ``/files/{name}/run``                        trigger ``migration_execute`` with it (Airflow REST API)
POST     ``/files/{name}/preview``                    Preview on target: trigger a dry run of it (``dry_run``), then show it
GET      ``/previews/{run_id}``                       a preview's state while it runs; its run page once it has a log
POST     ``/files/{name}/delete``                     delete one (refused while a running run or a kept backup uses it)
=======  ===========================================  =============================================
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from migration_manager.airflow_api import AirflowApi, ApiError
from migration_manager.ui import catalog
from migration_manager.ui.deps import EXECUTE_DAG, AirflowRoot, Api, Base, Store, write_access
from migration_manager.ui.render import not_found, page, send

log = logging.getLogger(__name__)

router = APIRouter()
WRITE = write_access()


def _trust(allow_unsigned: bool = False) -> Any:
    """The trusted keys (Variable ``migration_trusted_keys``) as the API server sees them."""
    from migration_manager.airflow.signing import server_trust
    from migration_manager.signing import Trust

    try:
        return server_trust(allow_unsigned)
    except Exception as exc:  # a broken Variable: nothing is trusted, and the page says why
        log.warning("Trusted keys unavailable: %s", exc)
        return Trust((), allow_unsigned)


def _with_use(root: Any, files: list[catalog.FileEntry]) -> list[catalog.FileEntry]:
    """Each file with ``in_use``: why it cannot be deleted now (running runs, kept backups)."""
    from migration_manager import retention

    return [f.model_copy(update={"in_use": tuple(retention.in_use(root, f.name))}) for f in files]


@router.get("/files", response_class=HTMLResponse, name="files")
def files(
    request: Request,
    root: Store,
    uploaded: str = "",
    triggered: str = "",
    paused: str = "",
    deleted: str = "",
) -> HTMLResponse:
    return page(
        request,
        "files.html",
        active="files",
        title="Migration files",
        files=_with_use(root, catalog.list_files(root, _trust())),
        uploaded=uploaded,
        triggered=triggered,
        paused=bool(paused),
        deleted=deleted,
    )


@router.post("/files/{name}/delete", name="file_delete", dependencies=WRITE)
def file_delete(request: Request, root: Store, base: Base, name: str) -> Response:
    from migration_manager import retention

    try:
        path = catalog.migration_file(root, name)
    except catalog.NotFound:
        return not_found(request, f"No migration file {name} in the store.")
    reasons = retention.in_use(root, path.name)
    if reasons:
        return page(
            request,
            "files.html",
            409,
            active="files",
            title="Migration files",
            files=_with_use(root, catalog.list_files(root)),
            error=f"{path.name} is in use and was not deleted: {'; '.join(reasons)}.",
        )
    path.unlink()
    log.info("Deleted migration file %s from the store", path.name)
    query = urlencode({"deleted": path.name})
    return RedirectResponse(f"{base}/files?{query}", 303)


@router.get("/files/{name}", name="file_download")
def file_download(root: Store, name: str) -> Response:
    try:
        path = catalog.migration_file(root, name)
    except catalog.NotFound:
        raise HTTPException(404, f"No migration file {name} in the store") from None
    return send(path, name, "application/zip")


@router.post("/files", name="file_upload", dependencies=WRITE)
def file_upload(
    request: Request,
    root: Store,
    base: Base,
    file: Annotated[UploadFile, File()],
    allow_unsigned: Annotated[bool, Form()] = False,
) -> Response:
    try:
        stored = catalog.store_upload(root, file.file, file.filename or "", _trust(allow_unsigned))
    except catalog.Refused as exc:
        log.warning("Upload refused: %s", exc)
        return page(
            request,
            "files.html",
            exc.status,
            active="files",
            title="Migration files",
            files=catalog.list_files(root, _trust()),
            error=str(exc),
        )
    query = urlencode({"uploaded": stored.name})
    return RedirectResponse(f"{base}/files?{query}", 303)


def _trigger(
    request: Request, api: AirflowApi, conf: dict[str, Any], note: str
) -> Response | tuple[str, Any]:
    """Trigger ``migration_execute`` through Airflow's REST API as the page's user: the run
    id and whether the DAG is paused, or the error page."""
    try:
        run = api.trigger_run(EXECUTE_DAG, conf, note=note)
        dag = api.dag(EXECUTE_DAG)
    except httpx.HTTPError as exc:
        return page(
            request,
            "error.html",
            502,
            title="Airflow's API did not answer",
            message=f"Triggering {EXECUTE_DAG} failed: {exc}",
        )
    except ApiError as exc:
        return page(
            request,
            "error.html",
            exc.status,
            title=f"{EXECUTE_DAG} was not triggered",
            message=f"Airflow answered {exc.status}: {exc.detail}",
        )
    run_id = str(run.get("dag_run_id", ""))
    log.info("Triggered %s run %s: %s", EXECUTE_DAG, run_id, note)
    return run_id, dag.get("is_paused") if dag else None


class RunForm(BaseModel):
    """The form of "Run" and "Preview on target": where to, and what the run may do."""

    target_conn_id: str = "migration_target"
    allow_drop: bool = False
    allow_unsigned: bool = False


def _trigger_file(
    request: Request, api: AirflowApi, root: Any, name: str, form: RunForm, *, dry_run: bool
) -> Response | tuple[str, bool]:
    """Start migration_execute with a stored file (a dry run for a preview)."""
    try:
        catalog.migration_file(root, name)
    except catalog.NotFound:
        return not_found(request, f"No migration file {name} in the store.")
    conf: dict[str, Any] = {
        "migration_file": name,
        "target_conn_id": form.target_conn_id.strip() or "migration_target",
        "allow_drop": form.allow_drop,
    }
    if dry_run:
        conf["dry_run"] = True
    if form.allow_unsigned:
        conf["allow_unsigned"] = True
    note = (
        f"Preview on target of {name} from the Migrations page"
        if dry_run
        else f"Started from the Migrations page with {name}"
    )
    return _trigger(request, api, conf, note)


@router.post("/files/{name}/run", name="file_run", dependencies=WRITE)
def file_run(
    request: Request,
    api: Api,
    root: Store,
    base: Base,
    name: str,
    form: Annotated[RunForm, Form()],
) -> Response:
    triggered = _trigger_file(request, api, root, name, form, dry_run=False)
    if isinstance(triggered, Response):
        return triggered
    run_id, paused = triggered
    query = urlencode({"triggered": run_id, "paused": "1" if paused else ""})
    return RedirectResponse(f"{base}/files?{query}", 303)


@router.post("/files/{name}/preview", name="file_preview", dependencies=WRITE)
def file_preview(
    request: Request,
    api: Api,
    root: Store,
    base: Base,
    name: str,
    form: Annotated[RunForm, Form()],
) -> Response:
    """Preview on target: a dry run of the file as a DAG run (never inside this server)."""
    triggered = _trigger_file(request, api, root, name, form, dry_run=True)
    if isinstance(triggered, Response):
        return triggered
    run_id, _paused = triggered
    return RedirectResponse(f"{base}/previews/{quote(run_id, safe='')}", 303)


@router.get("/previews/{run_id}", name="preview")
def preview(
    request: Request, api: Api, root: Store, base: Base, airflow_root: AirflowRoot, run_id: str
) -> Response:
    """A preview's run page once its log is in the store; until then its state (refreshing)."""
    with contextlib.suppress(catalog.NotFound):
        ref = catalog.find_run(root, run_id)
        return RedirectResponse(f"{base}/runs/{ref.migration}/{ref.run}", 303)
    try:
        run = api.dag_run(EXECUTE_DAG, run_id)
        dag = api.dag(EXECUTE_DAG)
    except httpx.HTTPError as exc:
        return page(
            request,
            "error.html",
            502,
            title="Airflow's API did not answer",
            message=f"Reading {EXECUTE_DAG} run {run_id} failed: {exc}",
        )
    except ApiError as exc:
        if exc.status == 404:
            return not_found(request, f"No {EXECUTE_DAG} run {run_id}.")
        return page(
            request,
            "error.html",
            exc.status,
            title=f"{EXECUTE_DAG} run {run_id}",
            message=f"Airflow answered {exc.status} for the run",
        )
    state = str(run.get("state") or "")
    return page(
        request,
        "preview.html",
        title=f"Preview {run_id}",
        active="files",
        run_id=run_id,
        state=state,
        ended=state in ("success", "failed"),
        conf=run.get("conf") or {},
        paused=bool(dag and dag.get("is_paused")),
        run_link=f"{airflow_root}/dags/{EXECUTE_DAG}/runs/{quote(run_id, safe='')}",
    )
