"""The Airflow connections the rules page offers: every connection of type postgres.

Two places hold them: Airflow's metadata database (listed through Airflow's REST API with the
caller's token, so the user sees what Airflow's own Connections page would show them) and
``AIRFLOW_CONN_<ID>`` environment variables of the API server (not in the database; listed from
``os.environ``). A chosen id is resolved on the server the way Airflow resolves it (environment
variables, secrets backends, then the metadata database) and turned into the engine's inputs by
:func:`migration_manager.airflow.connections.environment_of`. Passwords never leave this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, computed_field

from migration_manager.airflow.connections import Environment, environment_of
from migration_manager.airflow_api import AirflowApi, ApiError
from migration_manager.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "AIRFLOW_CONN_"
POSTGRES = ("postgres", "postgresql")


class UnknownConnection(LookupError):
    """No Airflow connection has this id."""


class ConnectionInfo(BaseModel):
    """A postgres connection as the rules page lists it (no password, no extra)."""

    model_config = ConfigDict(frozen=True)

    conn_id: str
    conn_type: str
    host: str | None
    port: int | None
    database: str | None
    description: str
    origin: str  # "database" or "environment"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        where = f"{self.host or '127.0.0.1'}{f':{self.port}' if self.port else ''}/{self.database or 'postgres'}"
        return f"{self.conn_id} ({where})"


def _parse_env_value(conn_id: str, value: str) -> Any:
    """A connection from an ``AIRFLOW_CONN_*`` value (JSON or URI), as Airflow parses it."""
    from airflow.models.connection import Connection

    text = value.strip()
    if text.startswith("{"):
        return Connection.from_json(text, conn_id=conn_id)
    return Connection(conn_id=conn_id, uri=text)


def env_connections(environ: Mapping[str, str] | None = None) -> list[ConnectionInfo]:
    """Postgres connections given as ``AIRFLOW_CONN_<ID>`` environment variables."""
    environ = os.environ if environ is None else environ
    found = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        conn_id = name[len(ENV_PREFIX) :].lower()
        try:
            conn = _parse_env_value(conn_id, value)
        except Exception as exc:  # a broken variable is Airflow's problem, not the page's
            log.warning("Skipping environment variable %s: not a connection (%s)", name, exc)
            continue
        if (conn.conn_type or "").lower() not in POSTGRES:
            continue
        found.append(
            ConnectionInfo(
                conn_id=conn_id,
                conn_type="postgres",
                host=conn.host or None,
                port=conn.port or None,
                database=conn.schema or None,
                description=conn.description or "",
                origin="environment",
            )
        )
    return found


def db_connections(api: AirflowApi) -> list[ConnectionInfo]:
    """Postgres connections of the metadata database, through ``GET /api/v2/connections``.

    Raises :class:`PermissionError` when the user may not list connections.
    """
    found: list[ConnectionInfo] = []
    try:
        for item in api.connections():
            if str(item.get("conn_type") or "").lower() not in POSTGRES:
                continue
            found.append(
                ConnectionInfo(
                    conn_id=str(item["connection_id"]),
                    conn_type="postgres",
                    host=item.get("host") or None,
                    port=item.get("port") or None,
                    database=item.get("schema") or None,
                    description=str(item.get("description") or ""),
                    origin="database",
                )
            )
    except ApiError as exc:
        if exc.status in (401, 403):
            raise PermissionError(f"Airflow answered {exc.status} listing connections") from None
        raise
    return found


def listed(api: AirflowApi) -> tuple[list[ConnectionInfo], str | None]:
    """Postgres connections the user may see (database and environment), and a note when the
    database's could not be listed."""
    note = None
    from_db: list[ConnectionInfo] = []
    try:
        from_db = db_connections(api)
    except (PermissionError, ApiError, httpx.HTTPError, ValueError) as exc:
        note = f"Connections of the metadata database are not listed: {exc}"
    return merged(from_db, env_connections()), note


def merged(from_db: list[ConnectionInfo], from_env: list[ConnectionInfo]) -> list[ConnectionInfo]:
    """Both lists by id; an environment variable wins over the database, as in Airflow's lookup."""
    by_id = {c.conn_id: c for c in from_db}
    by_id.update({c.conn_id: c for c in from_env})
    return sorted(by_id.values(), key=lambda c: c.conn_id)


def resolve(conn_id: str) -> Environment:
    """The engine's inputs (libpq URI, app settings) for a connection id, resolved on the server.

    Raises :class:`UnknownConnection` for an id Airflow does not know, :class:`ConfigError` for a
    connection that is not of type postgres or whose extra is invalid.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    conn_id = (conn_id or "").strip()
    if not conn_id:
        raise UnknownConnection("No connection chosen")
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise UnknownConnection(f"Airflow has no connection {conn_id!r}") from None
    kind = str(conn.conn_type or "").lower()
    if kind not in POSTGRES:
        raise ConfigError(
            f"Connection {conn_id!r} is of type {kind or 'unknown'!r}; choose a postgres connection"
        )
    return environment_of(conn, conn_id)
