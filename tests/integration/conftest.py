"""Fixtures of the integration tests (the databases are tests/conftest.py's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.archive_tools import ITEMS_SOURCE, ITEMS_TARGET, OVERWRITE_USER
from tests.integration.dagrun_tools import Logs
from tests.mailtools import Inbox, free_port
from tests.pgtools import make_file, sql
from tests.uitools import api_token


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """An SMTP server on loopback and the Airflow connection ``mm_smtp`` to it."""
    from aiosmtpd.controller import Controller

    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {
            "from_email": "migrations@airflow.test",
            "disable_tls": True,
            "disable_ssl": True,
            "timeout": 10,
            "retry_limit": 1,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_MM_SMTP", json.dumps(conn))
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Logs:
    """Task logs of the test's ``dag.test()`` runs: ``logs.run(dag_id, conf)``, ``logs.task(name)``."""
    return Logs(capfd, caplog)


@pytest.fixture
def good_file(source: str, target: str, tmp_path: Path) -> Path:
    """A valid migration file (overwrite items, create fresh) and a target it would change
    (tests/integration/archive_tools.py)."""
    sql(source, ITEMS_SOURCE)
    sql(target, ITEMS_TARGET)
    path = tmp_path / "good.zip"
    make_file(source, path, **OVERWRITE_USER)
    return path


# --- the pages' API test client: the test module defines ``client`` (Airflow's API server app) ---


@pytest.fixture(scope="module")
def admin(client: Any) -> dict[str, str]:
    """Authorization header of user admin on the module's ``client``."""
    return {"Authorization": f"Bearer {api_token(client, 'admin')}"}


@pytest.fixture(scope="module")
def viewer(client: Any) -> dict[str, str]:
    """Authorization header of user viewer on the module's ``client``."""
    return {"Authorization": f"Bearer {api_token(client, 'viewer')}"}
