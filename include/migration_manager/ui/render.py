"""How the pages answer: HTML from the Jinja templates (``Jinja2Templates``), files of the store
(downloads), and the pages' own static files (``StaticFiles``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from migration_manager import run_log_text, text_format
from migration_manager.ui import catalog
from migration_manager.ui.deps import airflow_root, base

HERE = Path(__file__).resolve().parent


# --- template filters ----------------------------------------------------------------------------


def _number(value: Any) -> str:
    return f"{value:,}".replace(",", "\u202f") if isinstance(value, int) else str(value or 0)


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
    env.globals["sample_keys"] = run_log_text.sample_keys
    return env


templates = Jinja2Templates(env=_environment())


# --- answers ---------------------------------------------------------------------------------------


def page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page of the Migrations UI (``base``: where the pages are, ``airflow_root``: Airflow's UI)."""
    values.setdefault("active", "")
    context = {"base": base(request), "airflow_root": airflow_root(request), **values}
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def not_found(request: Request, what: str) -> HTMLResponse:
    return page(request, "error.html", 404, title="Not found", message=what)


def _chunks(path: Any) -> Iterator[bytes]:
    """A file of a remote store (S3, ...), streamed: memory does not grow with its size."""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def send(path: Any, name: str, media_type: str, *, inline: bool = False) -> Response:
    """A file of the store as a download (``inline``: shown by the browser), never sniffed."""
    disposition = "inline" if inline else "attachment"
    headers = {"Content-Disposition": f'{disposition}; filename="{name}"'}
    headers["X-Content-Type-Options"] = "nosniff"
    local = catalog.local_path(path)
    if local is not None:
        return FileResponse(local, media_type=media_type, headers=headers)
    return StreamingResponse(_chunks(path), media_type=media_type, headers=headers)


class Static:
    """A page's static files (``StaticFiles`` on ``static/<folder>``), served by a route so that
    they need the same Airflow login as the pages (a mounted app would skip the app's
    dependencies). Only the files of that folder; anything else is the page's 404."""

    def __init__(self, folder: str, missing: str = "No static file {name}"):
        self.files = StaticFiles(directory=HERE / "static" / folder)
        self.missing = missing

    async def response(self, request: Request, name: str) -> Response:
        try:
            return await self.files.get_response(name, request.scope)
        except StarletteHTTPException as exc:
            if exc.status_code == 404:
                raise HTTPException(404, self.missing.format(name=name)) from None
            raise
