"""The Migrations and rules pages: one FastAPI app that the Airflow plugin mounts at ``/migrations``.

Every route requires an authenticated Airflow user (Airflow's own auth dependency: the UI's
``_token`` cookie or an ``Authorization: Bearer`` token) allowed to read runs of
``migration_execute``; uploading a file and running one require the right to trigger it.
Plugin apps are public unless they say so: this one says so for the whole app.

Routes (relative to the mount point), by router:

=======  ===========================================  =============================================
*        ``/``, ``/runs/...``, ``/backups``           migrations, one run and its downloads, backups (``migrations.py``)
*        ``/files...``, ``/previews/{run_id}``        migration files: upload, download, run, preview, delete (``files.py``)
*        ``/rules/...``                               configure a migration, preview, rule sets, start (``rules_page.py``)
GET      ``/static/{style.css,page.js}``              the stylesheet, the script for links to Airflow
=======  ===========================================  =============================================
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from migration_manager.ui import catalog, files, migrations, rules_page
from migration_manager.ui.deps import ApiClientFactory, requires
from migration_manager.ui.guards import UploadLimit, same_origin_only
from migration_manager.ui.lazy import PREFIX
from migration_manager.ui.render import Static, page

__all__ = ["UploadLimit", "create_app"]

STATIC = Static("migrations")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Every 404 (unknown route, a name that cannot be in the store) is the page's own; the
    rules page's JSON API answers JSON."""
    assert isinstance(exc, StarletteHTTPException)
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


async def _static(request: Request, name: str) -> Response:
    return await STATIC.response(request, name)


def create_app(*, prefix: str = PREFIX, api_client: ApiClientFactory | None = None) -> FastAPI:
    """The Migrations app. ``api_client`` replaces the HTTP client of Airflow's REST API (tests)."""
    app = FastAPI(
        title="Migrations",
        description="Migration runs, their logs and SQL, migration files and backups.",
        dependencies=[Depends(requires("GET")), Depends(same_origin_only)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.prefix = prefix
    app.state.api_client = api_client
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(migrations.router)
    app.include_router(files.router)
    app.add_api_route("/static/{name}", _static, methods=["GET"], name="static")
    app.include_router(rules_page.router, prefix="/rules")
    app.add_middleware(UploadLimit, limit=catalog.MAX_UPLOAD_BYTES)
    return app
