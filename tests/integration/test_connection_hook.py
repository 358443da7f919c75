"""MigrationDatabaseHook: the Airflow connection (type postgres) as the engine's environment."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk._shared.secrets_masker import redact

from migration_manager import pg
from migration_manager.airflow.connections import environment, environment_of
from migration_manager.airflow.hooks import MigrationDatabaseHook
from tests.factories import connection_document

AES = "ab" * 32
APP_KEY = "the-apps-jwt-signing-key"


def _conn(dsn: str, extra: dict[str, Any]) -> str:
    return json.dumps(connection_document(dsn, extra=extra, password="p@ss/word secret"))


def test_the_hook_owns_the_url_the_app_env_and_the_app(
    target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the AES key in a file Airflow never reads, the app's key under a name Airflow does not
    # take for a secret: only the hook can mask them
    env_file = tmp_path / ".env"
    env_file.write_text(f"APP_AES_SECRET_KEY={AES}\n")
    extra = {
        "sslmode": "disable",
        "app_env_file": str(env_file),
        "app_env": {"APP_KEY": APP_KEY, "DB_DIALECT": "postgres"},
        "app_url": "http://app.example:13000/",
        "app_api_token": "token-of-the-app-1234",
    }
    monkeypatch.setenv("AIRFLOW_CONN_MM_HOOK_TARGET", _conn(target, extra))
    hook = MigrationDatabaseHook("mm_hook_target")
    assert isinstance(hook, PostgresHook)
    parts = urlsplit(target)
    assert hook.dsn == (
        f"postgresql://{parts.username}:p%40ss%2Fword%20secret@{parts.hostname}:"
        f"{parts.port or 5432}/{parts.path.lstrip('/')}?sslmode=disable"
    )
    assert hook.app_env == {"APP_AES_SECRET_KEY": AES, "APP_KEY": APP_KEY, "DB_DIALECT": "postgres"}
    assert hook.aes_key_hex == AES
    assert hook.app is not None and hook.app.url == "http://app.example:13000"
    assert hook.app.token == "token-of-the-app-1234"
    # every secret the hook handed out is masked in what Airflow logs
    said = redact(f"key {AES} app {APP_KEY} token {hook.app.token} password p@ss/word secret")
    assert AES not in said and APP_KEY not in said and "token-of-the-app-1234" not in said
    assert "p@ss/word secret" not in said
    # the environment a task passes to the engine
    env = environment("mm_hook_target")
    assert (env.conn_id, env.dsn, env.app_env, env.app) == (
        "mm_hook_target",
        hook.dsn,
        hook.app_env,
        hook.app,
    )


def test_a_connection_without_password_host_or_database_gets_libpq_defaults() -> None:
    # the pages' server passes airflow.models.Connection objects: anything with these fields
    conn = SimpleNamespace(
        login="postgres", password=None, host=None, port=None, schema=None, extra_dejson={}
    )
    env = environment_of(conn, "plain")
    assert env.dsn == "postgresql://postgres@127.0.0.1/postgres"
    assert env.app_env == {} and env.app is None
    with pg.connect(environment_of(_real(), "real").dsn) as c:
        assert c.execute("select 1").fetchone() == (1,)


def _real() -> Any:
    import os

    parts = urlsplit(os.environ.get("MM_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    return SimpleNamespace(
        login=parts.username,
        password=parts.password,
        host=parts.hostname,
        port=parts.port,
        schema=parts.path.lstrip("/") or None,
        extra_dejson={},
    )


def test_a_bad_app_env_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from migration_manager.errors import ConfigError

    conn = SimpleNamespace(
        login="u", password="", host="h", port=5432, schema="d", extra_dejson={"app_env": "{no"}
    )
    with pytest.raises(ConfigError, match="badly: extra 'app_env' is not a JSON object"):
        environment_of(conn, "badly")
