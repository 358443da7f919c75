"""What the pages' routes depend on (FastAPI dependencies): Airflow's auth, the migration store,
Airflow's REST API as the calling user, and where the pages and Airflow's UI are mounted.

Every route of the Migrations and rules pages requires an authenticated Airflow user allowed to
read runs of ``migration_execute`` (:func:`requires` ``("GET")``, on the whole app); a route that
changes something also requires the right to trigger it (:data:`WRITE`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from migration_manager.airflow_api import AirflowApi

EXECUTE_DAG = "migration_execute"

ApiClientFactory = Callable[[Request], httpx.Client]


def requires(method: str) -> Callable[..., Any]:
    """Airflow's ``requires_access_dag`` on runs of ``migration_execute`` (imported lazily)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag(method, DagAccessEntity.RUN, param_dag_id=EXECUTE_DAG)  # type: ignore[arg-type]


def write_access() -> list[Any]:
    """The dependencies of a route that changes something: the right to trigger runs."""
    return [Depends(requires("POST"))]


def token(request: Request) -> str | None:
    """The caller's Airflow token (Bearer header first, as Airflow's ``get_user`` does, then the UI cookie)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    return request.cookies.get(COOKIE_NAME_JWT_TOKEN)


def store() -> Any:
    """The migration store's root (``MIGRATION_STORE``)."""
    from migration_manager.airflow.store import store_root

    return store_root()


def base(request: Request) -> str:
    """Where the pages are mounted (``/migrations``, below Airflow's ``[api] base_url`` path)."""
    return str(request.scope.get("root_path") or "")


def airflow_root(request: Request) -> str:
    """Where the Airflow UI lives, from this app's mount point (honours ``[api] base_url`` paths)."""
    root = base(request)
    prefix = request.app.state.prefix
    return root[: -len(prefix)] if prefix and root.endswith(prefix) else ""


def airflow_api(request: Request) -> Iterator[AirflowApi]:
    """A client of Airflow's REST API on this same server, as the calling user (closed after
    the request). ``app.state.api_client`` replaces its HTTP client (tests)."""
    factory: ApiClientFactory | None = getattr(request.app.state, "api_client", None)
    if factory is not None:
        client = factory(request)
    else:
        url = os.environ.get("MM_AIRFLOW_API_URL", "").rstrip("/")
        if not url:
            url = f"{request.url.scheme}://{request.url.netloc}{airflow_root(request)}"
        client = httpx.Client(base_url=url, timeout=30)
    api = AirflowApi(client, token(request))
    try:
        yield api
    finally:
        api.close()


Store = Annotated[Any, Depends(store)]
Api = Annotated[AirflowApi, Depends(airflow_api)]
Base = Annotated[str, Depends(base)]
AirflowRoot = Annotated[str, Depends(airflow_root)]
