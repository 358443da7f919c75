"""The Migrations page: a FastAPI app that the Airflow plugin mounts at ``/migrations``.

Every route requires an authenticated Airflow user (Airflow's own auth dependency: the UI's
``_token`` cookie or an ``Authorization: Bearer`` token) allowed to read runs of
``migration_execute``; uploading a file and running one require the right to trigger it.
Plugin apps are public unless they say so: this one says so for the whole app.

Routes (relative to the mount point):

=======  ===========================================  =============================================
GET      ``/``                                        migrations, newest first (``target``, ``status``)
GET      ``/runs/{migration}/{run}``                  one run: process timeline, tables, checks, log
GET      ``/runs/{migration}/{run}/download/{name}``  ``migration.log``, ``migration.json``, ``schema.sql``, ``data.sql``, ``summary.json``
GET      ``/files``                                   migration files in the store
GET      ``/files/{name}``                            download one
POST     ``/files``                                   upload one (verified before it is stored)
POST     ``/files/{name}/run``                        trigger ``migration_execute`` with it (Airflow REST API)
POST     ``/files/{name}/preview``                    Preview on target: trigger a dry run of it (``dry_run``), then show it
GET      ``/previews/{run_id}``                       a preview's state while it runs; its run page once it has a log
POST     ``/files/{name}/delete``                     delete one (refused while a running run or a kept backup uses it)
GET      ``/backups``                                 backups of every target, with their metadata
*        ``/rules/...``                               configure a migration, preview, rule sets, start (``rules.py``)
GET      ``/static/{style.css,page.js}``              the stylesheet, the script for links to Airflow
=======  ===========================================  =============================================
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from migration_manager import (
    run_files,
    run_log_text,
    run_record,
    step_outcomes,
    store_layout,
    text_format,
)
from migration_manager.ui import catalog, charts
from migration_manager.ui.lazy import PREFIX

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
EXECUTE_DAG = "migration_execute"
QUIET = ("unchanged", "skipped")  # tables a run did not change
MEDIA = {
    run_files.RECORD: "application/json",
    run_files.SUMMARY: "application/json",
    run_files.LOG: "text/plain; charset=utf-8",
    run_files.SCHEMA_SQL: "application/sql; charset=utf-8",
    run_files.DATA_SQL: "application/sql; charset=utf-8",
}

ApiClientFactory = Callable[[Request], httpx.Client]


# --- auth: Airflow's own dependencies --------------------------------------------------------


def _requires(method: str) -> Callable[..., Any]:
    """Airflow's ``requires_access_dag`` on runs of ``migration_execute`` (imported lazily)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag(method, DagAccessEntity.RUN, param_dag_id=EXECUTE_DAG)  # type: ignore[arg-type]


def _token(request: Request) -> str | None:
    """The caller's Airflow token (Bearer header first, as Airflow's ``get_user`` does, then the UI cookie)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    return request.cookies.get(COOKIE_NAME_JWT_TOKEN)


# --- cross-site request forgery -----------------------------------------------------------------

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def allowed_origins(request: Request) -> set[str]:
    """The page's own origin (as this request reached the server), Airflow's ``[api] base_url``
    and ``MM_UI_ORIGINS`` (comma-separated, for a proxy that rewrites the host)."""
    own = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    with contextlib.suppress(Exception):
        from airflow.configuration import conf

        base = _origin_of(conf.get("api", "base_url", fallback="") or "")
        if base:
            own.add(base)
    for item in os.environ.get("MM_UI_ORIGINS", "").split(","):
        origin = _origin_of(item.strip())
        if origin:
            own.add(origin)
    return own


def same_origin_only(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site.

    A request carrying ``Authorization: Bearer`` cannot be forged by a form on another site
    (browsers never add that header on their own): it passes. Any other POST/PUT/PATCH/DELETE
    (authenticated by the UI's cookie, which browsers do attach cross-site) must name this page's
    origin in ``Origin`` (or, when a browser sends none, ``Referer``).
    """
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        referer = request.headers.get("referer")
        origin = _origin_of(referer) if referer else None
    if origin is None:
        raise HTTPException(
            403,
            "Refused: this request does not say which page sent it (no Origin or Referer header); "
            "use the Migrations page itself, or Airflow's API with a bearer token",
        )
    if origin.lower() not in allowed_origins(request):
        raise HTTPException(
            403,
            f"Refused: this request came from another site ({origin}), not from the Migrations "
            "page (cross-site request forgery)",
        )


class UploadLimit:
    """ASGI wrapper: a POST body larger than ``limit`` bytes gets 413 before it is read whole.

    A declared ``Content-Length`` over the limit is answered at once; a body without one is
    counted as it arrives and cut off at the limit.
    """

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    def _message(self) -> bytes:
        return (
            f"The upload is larger than the limit of {self.limit} bytes (MM_MAX_UPLOAD_BYTES); "
            "nothing was stored"
        ).encode()

    async def _refuse(self, send: Any) -> None:
        body = self._message()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body") or b"")
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)


class _TooLarge(Exception):
    pass


def _trust(allow_unsigned: bool = False) -> Any:
    """The trusted keys (Variable ``migration_trusted_keys``) as the API server sees them."""
    from migration_manager.airflow.signing import server_trust
    from migration_manager.signing import Trust

    try:
        return server_trust(allow_unsigned)
    except Exception as exc:  # a broken Variable: nothing is trusted, and the page says why
        log.warning("Trusted keys unavailable: %s", exc)
        return Trust((), allow_unsigned)


# --- helpers -------------------------------------------------------------------------------------


def _store() -> Any:
    from migration_manager.airflow.store import store_root

    return store_root()


def _number(value: Any) -> str:
    return f"{value:,}".replace(",", "\u202f") if isinstance(value, int) else str(value or 0)


def _chunks(path: Any) -> Iterator[bytes]:
    """A file of a remote store (S3, ...), streamed: memory does not grow with its size."""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=text_format.when, duration=text_format.duration, bytes=text_format.size, number=_number
    )
    env.globals["describe_outcome"] = step_outcomes.describe_outcome
    env.globals["sample_keys"] = run_log_text.sample_keys
    return env


def _airflow_root(request: Request) -> str:
    """Where the Airflow UI lives, from this app's mount point (honours ``[api] base_url`` paths)."""
    root = str(request.scope.get("root_path") or "")
    prefix = request.app.state.prefix
    return root[: -len(prefix)] if prefix and root.endswith(prefix) else ""


def _api_client(request: Request) -> httpx.Client:
    """A client of Airflow's REST API on this same server, as the calling user."""
    factory: ApiClientFactory | None = getattr(request.app.state, "api_client", None)
    if factory is not None:
        return factory(request)
    base = os.environ.get("MM_AIRFLOW_API_URL", "").rstrip("/")
    if not base:
        base = f"{request.url.scheme}://{request.url.netloc}{_airflow_root(request)}"
    return httpx.Client(base_url=base, timeout=30)


def _with_use(root: Any, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each file with ``in_use``: why it cannot be deleted now (running runs, kept backups)."""
    from migration_manager import retention

    for f in files:
        f["in_use"] = retention.in_use(root, f["name"])
    return files


# --- the app ------------------------------------------------------------------------------------


def create_app(*, prefix: str = PREFIX, api_client: ApiClientFactory | None = None) -> FastAPI:
    """The Migrations app. ``api_client`` replaces the HTTP client of Airflow's REST API (tests)."""
    read = [Depends(_requires("GET")), Depends(same_origin_only)]
    write = [Depends(_requires("POST"))]
    app = FastAPI(
        title="Migrations",
        description="Migration runs, their logs and SQL, migration files and backups.",
        dependencies=read,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.prefix = prefix
    app.state.api_client = api_client
    env = _environment()

    def page(
        request: Request, template: str, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        values.setdefault("active", "")
        html = env.get_template(template).render(
            request=request,
            base=str(request.scope.get("root_path") or ""),
            airflow_root=_airflow_root(request),
            **values,
        )
        return HTMLResponse(html, status_code=status_code)

    def not_found(request: Request, what: str) -> HTMLResponse:
        return page(request, "error.html", 404, title="Not found", message=what)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Every 404 (unknown route, a name that cannot be in the store) is the page's own."""
        api = str(request.url.path).split(request.app.state.prefix, 1)[-1].startswith("/rules/api")
        if exc.status_code == 404 and not api:
            detail = exc.detail if isinstance(exc.detail, str) and exc.detail != "Not Found" else ""
            return page(
                request,
                "error.html",
                404,
                title="Not found",
                message=detail or "No such page or file in the migration store.",
            )
        return await http_exception_handler(request, exc)

    def send(path: Any, name: str, media_type: str, *, inline: bool = False) -> Response:
        disposition = "inline" if inline else "attachment"
        headers = {"Content-Disposition": f'{disposition}; filename="{name}"'}
        headers["X-Content-Type-Options"] = "nosniff"
        local = catalog.local_path(path)
        if local is not None:
            return FileResponse(local, media_type=media_type, headers=headers)
        return StreamingResponse(_chunks(path), media_type=media_type, headers=headers)

    @app.get("/", response_class=HTMLResponse, name="index")
    def index(request: Request, target: str = "", status: str = "") -> HTMLResponse:
        root = _store()
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

    @app.get("/runs/{migration}/{run}", response_class=HTMLResponse, name="run_page")
    def run_page(request: Request, migration: str, run: str) -> HTMLResponse:
        root = _store()
        try:
            ref = catalog.RunRef.checked(migration, run)
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
            f"{_airflow_root(request)}/dags/{quote(str(record.get('dag_id')), safe='')}"
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

    @app.get("/runs/{migration}/{run}/download/{name}", name="run_download")
    def run_download(migration: str, run: str, name: str, inline: bool = False) -> Response:
        try:
            ref = catalog.RunRef.checked(migration, run)
            path = catalog.log_file(_store(), ref, name)
        except catalog.NotFound:
            raise HTTPException(404, f"No {name} for migration log {migration}/{run}") from None
        download = name if name != run_files.RECORD else f"{ref.migration}.{ref.run}.json"
        if name in (run_files.LOG, run_files.SCHEMA_SQL, run_files.DATA_SQL):
            download = f"{ref.migration}.{name}"
        return send(path, download, MEDIA[name], inline=inline)

    @app.get("/files", response_class=HTMLResponse, name="files")
    def files(
        request: Request,
        uploaded: str = "",
        triggered: str = "",
        paused: str = "",
        deleted: str = "",
    ) -> HTMLResponse:
        root = _store()
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

    @app.post("/files/{name}/delete", name="file_delete", dependencies=write)
    def file_delete(request: Request, name: str) -> Response:
        from migration_manager import retention

        root = _store()
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
        return RedirectResponse(f"{request.scope.get('root_path', '')}/files?{query}", 303)

    @app.get("/files/{name}", name="file_download")
    def file_download(name: str) -> Response:
        try:
            path = catalog.migration_file(_store(), name)
        except catalog.NotFound:
            raise HTTPException(404, f"No migration file {name} in the store") from None
        return send(path, name, "application/zip")

    @app.post("/files", name="file_upload", dependencies=write)
    def file_upload(
        request: Request,
        file: Annotated[UploadFile, File()],
        allow_unsigned: Annotated[bool, Form()] = False,
    ) -> Response:
        root = _store()
        try:
            stored = catalog.store_upload(
                root, file.file, file.filename or "", _trust(allow_unsigned)
            )
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
        query = urlencode({"uploaded": stored["name"]})
        return RedirectResponse(f"{request.scope.get('root_path', '')}/files?{query}", 303)

    def trigger(request: Request, conf: dict[str, Any], note: str) -> Response | tuple[str, Any]:
        """Trigger ``migration_execute`` through Airflow's REST API as the page's user: the run
        id and whether the DAG is paused, or the error page."""
        body = {"logical_date": None, "conf": conf, "note": note}
        token = _token(request)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = _api_client(request)
        try:
            resp = client.post(f"/api/v2/dags/{EXECUTE_DAG}/dagRuns", json=body, headers=headers)
            paused = None
            if resp.status_code < 300:
                dag = client.get(f"/api/v2/dags/{EXECUTE_DAG}", headers=headers)
                paused = dag.json().get("is_paused") if dag.status_code == 200 else None
        except httpx.HTTPError as exc:
            return page(
                request,
                "error.html",
                502,
                title="Airflow's API did not answer",
                message=f"Triggering {EXECUTE_DAG} failed: {exc}",
            )
        finally:
            client.close()
        if resp.status_code >= 300:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = resp.text
            return page(
                request,
                "error.html",
                resp.status_code,
                title=f"{EXECUTE_DAG} was not triggered",
                message=f"Airflow answered {resp.status_code}: {detail}",
            )
        run_id = str(resp.json().get("dag_run_id", ""))
        log.info("Triggered %s run %s: %s", EXECUTE_DAG, run_id, note)
        return run_id, paused

    def trigger_file(
        request: Request,
        name: str,
        target_conn_id: str,
        *,
        allow_drop: bool,
        allow_unsigned: bool,
        dry_run: bool,
        note: str,
    ) -> Response | tuple[str, bool]:
        """Start migration_execute with a stored file (a dry run for a preview)."""
        try:
            catalog.migration_file(_store(), name)
        except catalog.NotFound:
            return not_found(request, f"No migration file {name} in the store.")
        conf: dict[str, Any] = {
            "migration_file": name,
            "target_conn_id": target_conn_id.strip() or "migration_target",
            "allow_drop": allow_drop,
        }
        if dry_run:
            conf["dry_run"] = True
        if allow_unsigned:
            conf["allow_unsigned"] = True
        return trigger(request, conf, note)

    @app.post("/files/{name}/run", name="file_run", dependencies=write)
    def file_run(
        request: Request,
        name: str,
        target_conn_id: Annotated[str, Form()] = "migration_target",
        allow_drop: Annotated[bool, Form()] = False,
        allow_unsigned: Annotated[bool, Form()] = False,
    ) -> Response:
        triggered = trigger_file(
            request,
            name,
            target_conn_id,
            allow_drop=allow_drop,
            allow_unsigned=allow_unsigned,
            dry_run=False,
            note=f"Started from the Migrations page with {name}",
        )
        if isinstance(triggered, Response):
            return triggered
        run_id, paused = triggered
        query = urlencode({"triggered": run_id, "paused": "1" if paused else ""})
        return RedirectResponse(f"{request.scope.get('root_path', '')}/files?{query}", 303)

    @app.post("/files/{name}/preview", name="file_preview", dependencies=write)
    def file_preview(
        request: Request,
        name: str,
        target_conn_id: Annotated[str, Form()] = "migration_target",
        allow_drop: Annotated[bool, Form()] = False,
        allow_unsigned: Annotated[bool, Form()] = False,
    ) -> Response:
        """Preview on target: a dry run of the file as a DAG run (never inside this server)."""
        triggered = trigger_file(
            request,
            name,
            target_conn_id,
            allow_drop=allow_drop,
            allow_unsigned=allow_unsigned,
            dry_run=True,
            note=f"Preview on target of {name} from the Migrations page",
        )
        if isinstance(triggered, Response):
            return triggered
        run_id, _paused = triggered
        return RedirectResponse(
            f"{request.scope.get('root_path', '')}/previews/{quote(run_id, safe='')}", 303
        )

    @app.get("/previews/{run_id}", name="preview")
    def preview(request: Request, run_id: str) -> Response:
        """A preview's run page once its log is in the store; until then its state (refreshing)."""
        root_path = request.scope.get("root_path", "")
        with contextlib.suppress(catalog.NotFound):
            ref = catalog.find_run(_store(), run_id)
            return RedirectResponse(f"{root_path}/runs/{ref.migration}/{ref.run}", 303)
        token = _token(request)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = _api_client(request)
        try:
            resp = client.get(
                f"/api/v2/dags/{EXECUTE_DAG}/dagRuns/{quote(run_id, safe='')}", headers=headers
            )
            dag = client.get(f"/api/v2/dags/{EXECUTE_DAG}", headers=headers)
        except httpx.HTTPError as exc:
            return page(
                request,
                "error.html",
                502,
                title="Airflow's API did not answer",
                message=f"Reading {EXECUTE_DAG} run {run_id} failed: {exc}",
            )
        finally:
            client.close()
        if resp.status_code == 404:
            return not_found(request, f"No {EXECUTE_DAG} run {run_id}.")
        if resp.status_code >= 300:
            return page(
                request,
                "error.html",
                resp.status_code,
                title=f"{EXECUTE_DAG} run {run_id}",
                message=f"Airflow answered {resp.status_code} for the run",
            )
        run = resp.json()
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
            paused=dag.status_code == 200 and bool(dag.json().get("is_paused")),
            run_link=f"{_airflow_root(request)}/dags/{EXECUTE_DAG}/runs/{quote(run_id, safe='')}",
        )

    @app.get("/backups", response_class=HTMLResponse, name="backups")
    def backups(request: Request) -> HTMLResponse:
        root = _store()
        items = catalog.list_backups(root)
        for b in items:
            b["log"] = None
            if b.get("migration_id") and b.get("run_id"):
                ref = catalog.RunRef(
                    store_layout.safe_component(b["migration_id"]),
                    store_layout.safe_component(b["run_id"]),
                )
                with contextlib.suppress(catalog.NotFound):
                    catalog.run_folder(root, ref)
                    b["log"] = f"{ref.migration}/{ref.run}"
        return page(request, "backups.html", active="backups", title="Backups", backups=items)

    @app.get("/static/{name}", name="static")
    def static(name: str) -> Response:
        media = {"style.css": "text/css", "page.js": "text/javascript"}
        if name not in media:
            raise HTTPException(404, f"No static file {name}")
        return FileResponse(HERE / "static" / name, media_type=media[name])

    from migration_manager.ui import rules  # imports this module: configure, preview, save, start

    rules.install(app, page)
    app.add_middleware(UploadLimit, limit=catalog.MAX_UPLOAD_BYTES)
    return app
