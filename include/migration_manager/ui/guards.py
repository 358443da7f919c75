"""The pages' guards against other sites and oversized uploads.

:func:`same_origin_only` (a dependency of the whole app) refuses a state-changing request a
browser sent from another site; :class:`UploadLimit` (an ASGI middleware) answers 413 to a body
over ``MM_MAX_UPLOAD_BYTES`` before it is read whole.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

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
