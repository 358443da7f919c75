"""A small client of Airflow's REST API (``/api/v2``), over HTTP.

One client for everything outside Airflow's own processes that talks to a running Airflow: the
Migrations and rules pages (as the calling user, with their token), ``bin/airflow-local`` (pools,
connections, health) and the end-to-end tests. It imports nothing of Airflow (only ``httpx``),
so it lives beside the engine rather than in ``migration_manager.airflow``.

A call either returns the answer's JSON or raises :class:`ApiError` with Airflow's status and
``detail``; :meth:`AirflowApi.find` returns None for an answer that is not 200 (a DAG not parsed
yet, a task without an XCom). Transport failures are ``httpx.HTTPError`` as httpx raises them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

API = "/api/v2"
PAGE = 100


class ApiError(Exception):
    """Airflow answered a call with an unexpected status."""

    def __init__(self, method: str, url: str, status: int, detail: Any):
        self.method = method
        self.url = url
        self.status = status
        self.detail = detail  # Airflow's ``detail`` (a string, or a list/dict of problems)
        super().__init__(f"{method} {url}: Airflow answered {status}: {self.detail_text}")

    @property
    def detail_text(self) -> str:
        return self.detail if isinstance(self.detail, str) else json.dumps(self.detail)


def detail_of(resp: httpx.Response) -> Any:
    """The ``detail`` of an error answer (its text when it is not JSON)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text
    return body.get("detail") if isinstance(body, dict) else body


def q(value: str) -> str:
    """One path segment (a DAG id, a run id), quoted."""
    return quote(str(value), safe="")


class AirflowApi:
    """``AirflowApi(client, token)``: calls on ``client`` (its ``base_url`` is Airflow's root),
    each with ``Authorization: Bearer <token>`` when a token is given."""

    def __init__(self, client: httpx.Client, token: str | None = None):
        self.client = client
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def connect(cls, base_url: str, token: str | None = None, timeout: float = 30) -> AirflowApi:
        return cls(httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout), token)

    @classmethod
    def login(cls, base_url: str, user: str, password: str, timeout: float = 30) -> AirflowApi:
        """A client with a token of ``user`` (``POST /auth/token``, as the UI logs in)."""
        api = cls.connect(base_url, timeout=timeout)
        api.log_in(user, password)
        return api

    def log_in(self, user: str, password: str) -> None:
        resp = self.client.post("/auth/token", json={"username": user, "password": password})
        if resp.status_code not in (200, 201):
            raise ApiError("POST", "/auth/token", resp.status_code, detail_of(resp))
        self.client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The raw answer to ``method`` on ``/api/v2<path>``."""
        return self.client.request(method, f"{API}{path}", **kw)

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kw: Any) -> Any:
        """The JSON of the answer (None when empty); :class:`ApiError` for another status."""
        resp = self.request(method, path, **kw)
        if resp.status_code not in expect:
            raise ApiError(method, f"{API}{path}", resp.status_code, detail_of(resp))
        return resp.json() if resp.content else None

    def find(self, path: str, **kw: Any) -> Any:
        """``GET``: its JSON, or None when Airflow does not answer 200."""
        resp = self.request("GET", path, **kw)
        return resp.json() if resp.status_code == 200 else None

    # --- what the pages, the launcher and the tests ask ------------------------------------

    def health(self) -> Any:
        return self.call("GET", "/monitor/health")

    def upsert(self, kind: str, key: str, body: dict[str, Any]) -> Any:
        """Create or update a pool / connection / variable (``PATCH`` when it exists, else ``POST``)."""
        if self.request("GET", f"/{kind}/{q(key)}").status_code == 200:
            return self.call("PATCH", f"/{kind}/{q(key)}", json=body)
        return self.call("POST", f"/{kind}", json=body, expect=(200, 201))

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG, or None while Airflow does not know it (not parsed yet)."""
        found = self.find(f"/dags/{q(dag_id)}")
        return dict(found) if isinstance(found, dict) else None

    def set_paused(self, dag_id: str, paused: bool) -> Any:
        return self.call("PATCH", f"/dags/{q(dag_id)}", json={"is_paused": paused})

    def trigger_run(
        self,
        dag_id: str,
        conf: dict[str, Any],
        *,
        run_id: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """A new run (``logical_date`` None, as the UI's Trigger does): Airflow's DAG run."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id is not None:
            body["dag_run_id"] = run_id
        if note is not None:
            body["note"] = note
        return dict(self.call("POST", f"/dags/{q(dag_id)}/dagRuns", json=body, expect=(200, 201)))

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}"))

    def task_instances(self, dag_id: str, run_id: str, limit: int = 500) -> list[dict[str, Any]]:
        body = self.call(
            "GET", f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances", params={"limit": limit}
        )
        return list(body["task_instances"])

    def tasks(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's tasks (``task_id``, ``downstream_task_ids``, ...)."""
        return list(self.call("GET", f"/dags/{q(dag_id)}/tasks")["tasks"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """An XCom entry's ``value``, or None when there is none (yet)."""
        path = f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances/{q(task_id)}"
        found = self.find(f"{path}/xcomEntries/{q(key)}")
        return found.get("value") if isinstance(found, dict) else None

    def connections(self) -> Iterator[dict[str, Any]]:
        """Every connection of the metadata database, page by page, by id."""
        offset = 0
        while True:
            body = self.call(
                "GET",
                "/connections",
                params={"limit": PAGE, "offset": offset, "order_by": "connection_id"},
            )
            items = body.get("connections") or []
            yield from items
            offset += len(items)
            if not items or offset >= int(body.get("total_entries") or 0):
                return
