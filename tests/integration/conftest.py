"""Fixtures of the integration tests (the databases are tests/conftest.py's)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.mailtools import Inbox, free_port


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
