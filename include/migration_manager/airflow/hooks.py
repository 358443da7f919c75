"""The Airflow-native connection to an environment: a ``PostgresHook`` that also knows the app.

:class:`MigrationDatabaseHook` owns what the engine needs from an Airflow connection (type
``postgres``): the libpq URL of the database, the application's settings (extra ``app_env`` /
``app_env_file``), the app's AES key among them (``APP_AES_SECRET_KEY``), and the running app's
URL and credentials (extra ``app_url`` with ``app_api_token``, or ``app_account`` and
``app_password``). Every secret it hands out is registered with Airflow's log masker first.

Imported when a task runs (through :func:`migration_manager.airflow.connections.environment`),
not when a DAG file is parsed.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import quote

from airflow.providers.postgres.hooks.postgres import PostgresHook

from migration_manager.app_control import AppEndpoint
from migration_manager.config import app_env_from_extra

# libpq TLS settings carried from the connection's extra into the URL
TLS_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
# app_env entries that are secrets (masked in task logs)
SECRET_SETTINGS = ("APP_AES_SECRET_KEY", "APP_KEY", "DB_PASSWORD")


def _mask(value: str | None) -> None:
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # outside a task (the pages' server): nothing is logged from here
        pass


class MigrationDatabaseHook(PostgresHook):
    """A source or target environment: its database, its app's settings, its running app.

    :param migration_conn_id: the Airflow connection (type ``postgres``)
    :param connection: an already loaded connection object (the pages' server passes
        ``airflow.models.Connection``); default: looked up by id
    """

    conn_name_attr = "migration_conn_id"
    default_conn_name = "migration_target"
    hook_name = "Migration manager environment (PostgreSQL)"

    def __init__(self, migration_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(migration_conn_id=migration_conn_id, **kwargs)
        self.migration_conn_id = migration_conn_id

    @cached_property
    def dsn(self) -> str:
        """The database as a libpq URL (password included: never log it; ``redaction.redact`` removes it from text)."""
        conn = self.connection
        _mask(conn.password)
        user = quote(conn.login or "", safe="")
        password = quote(conn.password or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = conn.host or "127.0.0.1"
        port = f":{conn.port}" if conn.port else ""
        database = quote(conn.schema or "postgres", safe="")
        extra = self.connection_extra
        params = [f"{k}={quote(str(extra[k]), safe='')}" for k in TLS_EXTRAS if extra.get(k)]
        query = f"?{'&'.join(params)}" if params else ""
        return f"postgresql://{auth}{host}{port}/{database}{query}"

    @cached_property
    def app_env(self) -> dict[str, str]:
        """The application's settings (extra ``app_env`` and ``app_env_file``); secrets masked."""
        env = app_env_from_extra(self.connection_extra, conn_id=self.migration_conn_id)
        for name in SECRET_SETTINGS:
            _mask(env.get(name))
        return env

    @property
    def aes_key_hex(self) -> str | None:
        """The app's AES key as configured (``APP_AES_SECRET_KEY``, hex), masked; None: not set
        (the engine then reads ``APP_AES_SECRET_KEY_PATH``, see ``profiles``)."""
        return (self.app_env.get("APP_AES_SECRET_KEY") or "").strip() or None

    @cached_property
    def app(self) -> AppEndpoint | None:
        """The running app (extra ``app_url`` + credentials), credentials masked; None: not named."""
        endpoint = AppEndpoint.from_extra(self.connection_extra)
        if endpoint is not None:
            _mask(endpoint.token)
            _mask(endpoint.password)
        return endpoint
