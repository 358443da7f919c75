"""Test data built one way: the Airflow connection document for a PostgreSQL DSN.

The same body (conn_type postgres, host, port, login, password, schema, extra) is what
``AIRFLOW_CONN_*`` variables, the REST API and the hook tests are given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def connection_document(
    dsn: str, *, extra: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """Airflow's JSON connection form of ``dsn``; ``fields`` add or override keys
    (``password=...``, ``description=...``); ``extra`` is left out when not given."""
    parts = urlsplit(dsn)
    doc: dict[str, Any] = {
        "conn_type": "postgres",
        "host": parts.hostname,
        "port": parts.port or 5432,
        "login": parts.username,
        "password": parts.password,
        "schema": parts.path.lstrip("/"),
    }
    if extra is not None:
        doc["extra"] = extra
    doc.update(fields)
    return doc
