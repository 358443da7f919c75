"""Airflow connections to the engine's inputs: a libpq URI and the application's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook

from migration_manager.app_control import AppEndpoint
from migration_manager.config import app_env_from_extra


@dataclass(frozen=True)
class Environment:
    conn_id: str
    dsn: str
    app_env: dict[str, str]
    app: AppEndpoint | None = None  # the running app (extra app_url + credentials), if named


def environment(conn_id: str) -> Environment:
    return environment_of(BaseHook.get_connection(conn_id), conn_id)


def environment_of(conn: Any, conn_id: str) -> Environment:
    """The environment of a connection object (the Task SDK's, or the server's ``airflow.models``)."""
    user = quote(conn.login or "", safe="")
    password = quote(conn.password or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = conn.host or "127.0.0.1"
    port = f":{conn.port}" if conn.port else ""
    database = quote(conn.schema or "postgres", safe="")
    extra = conn.extra_dejson
    params = [
        f"{k}={quote(str(extra[k]), safe='')}"
        for k in ("sslmode", "sslrootcert", "sslcert", "sslkey")
        if extra.get(k)
    ]
    dsn = f"postgresql://{auth}{host}{port}/{database}" + (f"?{'&'.join(params)}" if params else "")
    return Environment(
        conn_id=conn_id,
        dsn=dsn,
        app_env=app_env_from_extra(extra, conn_id=conn_id),
        app=AppEndpoint.from_extra(extra),
    )
