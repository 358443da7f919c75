"""An ASGI app built on its first request.

Airflow imports every plugin in every task process (for macros and listeners), where the page
is never served: building the FastAPI app there would cost each task a second or more (Airflow's
auth imports the API server). The plugin mounts this placeholder instead; the API server builds
the real app when the first request arrives.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

PREFIX = "/migrations"


class LazyApp:
    """``LazyApp("package.module:factory", **kwargs)``: ``factory(**kwargs)`` on the first request."""

    def __init__(self, factory: str, **kwargs: Any):
        self._factory = factory
        self._kwargs = kwargs
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    module, _, name = self._factory.partition(":")
                    self._app = getattr(importlib.import_module(module), name)(**self._kwargs)
        return self._app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyApp({self._factory})"
