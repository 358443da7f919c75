"""Airflow connections to the engine's inputs: a libpq URI and the application's settings.

The connection is read by :class:`migration_manager.airflow.hooks.MigrationDatabaseHook` (a
``PostgresHook``); :class:`Environment` is what a task passes on to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migration_manager.airflow.hooks import MigrationDatabaseHook
    from migration_manager.app_control import AppEndpoint


@dataclass(frozen=True)
class Environment:
    conn_id: str
    dsn: str
    app_env: dict[str, str]
    app: AppEndpoint | None = None  # the running app (extra app_url + credentials), if named

    @classmethod
    def of_hook(cls, hook: MigrationDatabaseHook) -> Environment:
        return cls(conn_id=hook.migration_conn_id, dsn=hook.dsn, app_env=hook.app_env, app=hook.app)


def environment(conn_id: str) -> Environment:
    """The environment behind an Airflow connection id (inside a task)."""
    from migration_manager.airflow.hooks import MigrationDatabaseHook

    return Environment.of_hook(MigrationDatabaseHook(conn_id))


def environment_of(conn: Any, conn_id: str) -> Environment:
    """The environment of a connection object (the Task SDK's, or the server's ``airflow.models``)."""
    from migration_manager.airflow.hooks import MigrationDatabaseHook

    return Environment.of_hook(MigrationDatabaseHook(conn_id, connection=conn))
