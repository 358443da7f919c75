"""A real NocoBase application for tests: installed from the npm registry, run on a test database,
and checked through its own HTTP API as an admin.

``bin/nocobase-app-install`` installs NocoBase once into ``~/.cache/migration-manager/nocobase-<version>``
(``MM_NOCOBASE_CACHE`` overrides the folder); later runs reuse it. The app is started on an
existing database (never installed into it), under ``setsid``, and stopped by its process group.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pgtools import REPO

VERSION = "2.2.15"
ADMIN = {"account": "admin@nocobase.com", "password": "admin123"}
BASIC = {"X-Authenticator": "basic"}


def cache_dir(version: str = VERSION) -> Path:
    base = os.environ.get("MM_NOCOBASE_CACHE") or str(Path.home() / ".cache" / "migration-manager")
    return Path(base) / f"nocobase-{version}"


def install(version: str = VERSION) -> tuple[Path, float]:
    """The installed app's folder and the seconds the install took (0 when cached).

    Fails the test (never skips) when the npm registry cannot be reached or the install breaks.
    """
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(REPO / "bin" / "nocobase-app-install"), version, str(cache_dir(version))],
            capture_output=True,
            text=True,
            timeout=2400,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"Installing NocoBase {version} from the npm registry took over 40 minutes: {exc}"
        )
    if done.returncode != 0:
        pytest.fail(
            f"NocoBase {version} could not be installed from the npm registry "
            f"(bin/nocobase-app-install exited {done.returncode}); is registry.npmjs.org reachable? "
            f"Last output:\n{done.stderr[-4000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1]), round(time.monotonic() - started, 1)


@dataclass
class RunningApp:
    url: str
    database: str
    log: Path
    boot_seconds: float
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self) -> Api:
        return Api.sign_in(self.url)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def health(url: str) -> tuple[int, str]:
    try:
        r = httpx.get(url + "/api/__health_check", timeout=5)
        return r.status_code, r.text
    except httpx.HTTPError as exc:
        return 0, str(exc)


def _app_env(
    app_dir: Path,
    database: str,
    aes_key: bytes,
    port: int,
    work: Path,
    pg_host: str,
    settings: dict[str, str] | None,
) -> dict[str, str]:
    """The environment NocoBase runs with on ``database`` (its storage folder under ``work``)."""
    storage = work / f"storage-{database}"
    (storage / "apps" / "main").mkdir(parents=True, exist_ok=True)
    (storage / "apps" / "main" / "aes_key.dat").write_bytes(aes_key)
    tools = app_dir.parent / "tools" / "node_modules" / ".bin"
    return {
        **os.environ,
        "PATH": f"{tools}:{os.environ.get('PATH', '')}",
        "APP_ENV_PATH": str(app_dir / ".env"),
        "APP_LAUNCH_MODE": "node",
        "APP_ENV": "production",
        "APP_PORT": str(port),
        "APP_KEY": f"mm-test-{database}",
        "STORAGE_PATH": str(storage),
        "DB_DIALECT": "postgres",
        "DB_HOST": pg_host,
        "DB_PORT": os.environ.get("MM_NOCOBASE_DB_PORT", "5432"),
        "DB_DATABASE": database,
        "DB_USER": "postgres",
        "DB_PASSWORD": "x",
        "TZ": "UTC",
        **(settings or {}),  # DB_SCHEMA, DB_TABLE_PREFIX, DB_UNDERSCORED
    }


def install_database(
    app_dir: Path,
    database: str,
    aes_key: bytes,
    work: Path,
    settings: dict[str, str] | None = None,
    pg_host: str = "127.0.0.1",
) -> float:
    """``yarn nocobase install`` into the (existing, empty) ``database``; returns the seconds."""
    env = _app_env(app_dir, database, aes_key, 0, work, pg_host, settings)
    started = time.monotonic()
    log = work / f"install-{database}.log"
    with log.open("wb") as out:
        done = subprocess.run(
            ["yarn", "nocobase", "install", "-f"],
            cwd=app_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"yarn nocobase install into {database} exited {done.returncode}:\n"
            + log.read_text(errors="replace")[-3000:]
        )
    return round(time.monotonic() - started, 1)


@contextmanager
def running_app(
    app_dir: Path,
    database: str,
    aes_key: bytes,
    port: int,
    work: Path,
    pg_host: str = "127.0.0.1",
    settings: dict[str, str] | None = None,
) -> Iterator[RunningApp]:
    """NocoBase serving ``database`` (which it must already hold) on ``port``, with ``aes_key``
    and the app ``settings`` it was installed with."""
    env = _app_env(app_dir, database, aes_key, port, work, pg_host, settings)
    log = work / f"nocobase-{database}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["yarn", "start"],
            cwd=app_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: its own process group, stopped as one
        )
    app = RunningApp(f"http://127.0.0.1:{port}", database, log, 0.0, proc)
    try:
        deadline = time.monotonic() + 240
        while True:
            code, body = health(app.url)
            if code == 200 and body.strip() == "ok":
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"NocoBase on {database} did not become healthy (exit {proc.poll()}, last "
                    f"health answer {code} {body[:200]}); its log ends with:\n{app.log_tail()}"
                )
            time.sleep(1)
        app.boot_seconds = round(time.monotonic() - started, 1)
        yield app
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the app's whole process group (yarn, node and whatever they started)."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
    # children that outlived yarn
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class Api:
    """The app's HTTP API as an admin (``Authorization: Bearer``, ``X-Authenticator: basic``)."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", **BASIC},
            timeout=60,
        )

    @classmethod
    def sign_in(cls, url: str) -> Api:
        r = httpx.post(url + "/api/auth:signIn", json=ADMIN, headers=BASIC, timeout=60)
        assert r.status_code == 200, f"auth:signIn answered {r.status_code}: {r.text[:300]}"
        return cls(url, r.json()["data"]["token"])

    def get(self, action: str, **params: Any) -> Any:
        r = self.http.get("/api/" + action, params=params)
        assert r.status_code == 200, f"GET {action} answered {r.status_code}: {r.text[:500]}"
        body = r.json()
        return body.get("data", body) if isinstance(body, dict) else body

    def post(self, action: str, values: dict[str, Any] | None = None, **params: Any) -> Any:
        r = self.http.post("/api/" + action, json=values or {}, params=params)
        assert r.status_code == 200, f"POST {action} answered {r.status_code}: {r.text[:500]}"
        body = r.json()
        return body.get("data", body) if isinstance(body, dict) else body


@contextmanager
def echo_server(port: int) -> Iterator[str]:
    """An HTTP server answering every request with its path and headers as JSON."""

    class Echo(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Expected:
    """What an app serving staging's configuration must show."""

    pages: frozenset[str]  # top-level menu titles
    page_uids: frozenset[str]  # schemaUid of every route (pages and tabs)
    flow_model_uids: frozenset[str]
    fields: dict[str, int]  # user collection -> number of fields
    roles: frozenset[str]
    users: frozenset[str]  # usernames that must be there
    env_url: str
    secret: str


def check_app(api: Api, expected: Expected, echo_url: str) -> dict[str, str]:
    """Every check through the app's API; returns check -> what it saw (asserts on the way)."""
    seen: dict[str, str] = {}

    # the admin menu lists the pages (it filters routes through desktopRoutesUiLayouts)
    menu = api.get("desktopRoutes:listAccessible", tree="true", sort="sort")
    titles = {r.get("title") for r in menu}
    assert expected.pages <= titles, f"menu lacks {expected.pages - titles}: {titles}"
    routes: list[dict[str, Any]] = []
    stack = list(menu)
    while stack:
        r = stack.pop()
        routes.append(r)
        stack.extend(r.get("children") or [])
    uids = {r["schemaUid"] for r in routes if r.get("schemaUid")}
    assert expected.page_uids <= uids, f"routes lack {expected.page_uids - uids}"
    seen["menu"] = f"{len(menu)} page(s): {sorted(t for t in titles if t)}"

    # each page's UI schema and flow models load
    for uid in sorted(expected.page_uids):
        schema = api.get(f"uiSchemas:getJsonSchema/{uid}")
        assert schema.get("x-uid") == uid, f"uiSchemas:getJsonSchema/{uid} gave {schema}"
    for uid in sorted(expected.flow_model_uids):
        model = api.get("flowModels:findOne", uid=uid)
        assert (model or {}).get("uid") == uid, f"flowModels:findOne {uid} gave {model}"
    seen["ui schemas"] = (
        f"{len(expected.page_uids)} schema(s), {len(expected.flow_model_uids)} flow model(s)"
    )

    # collections with their category and fields
    collections = {
        c["name"]: c
        for c in api.get(
            "collections:list", paginate="false", **{"appends[]": ["category", "fields"]}
        )
    }
    for name, count in expected.fields.items():
        assert name in collections, f"collections:list lacks {name}"
        c = collections[name]
        assert [x["name"] for x in c.get("category") or []] == ["Helpdesk"], (
            name,
            c.get("category"),
        )
        assert len(c.get("fields") or []) == count, (name, len(c.get("fields") or []), count)
    priority = next(f for f in collections["tickets"]["fields"] if f["name"] == "priority")
    assert priority["uiSchema"]["title"] == "Urgency"
    assert any(f["name"] == "department" for f in collections["users"]["fields"])
    seen["collections"] = ", ".join(
        f"{n} ({c} fields, Helpdesk)" for n, c in expected.fields.items()
    )

    # a record in each new user-defined collection, with the m2o, m2m and tree relations
    stamp = str(int(time.time() * 1000))[-8:]
    category = api.post("ticketCategories:create", {"name": f"mm-{stamp}", "color": "#00aa00"})
    tag = api.post("tags:create", {"label": f"mm-{stamp}", "slug": f"mm-{stamp}"})
    root = api.post("locations:create", {"name": f"mm-root-{stamp}"})
    child = api.post("locations:create", {"name": f"mm-child-{stamp}", "parentId": root["id"]})
    ticket = api.post(
        "tickets:create",
        {
            "title": f"mm ticket {stamp}",
            "body": "line 1\nline 2",
            "priority": "high",
            "category": category["id"],
            "location": child["id"],
            "tags": [tag["id"]],
        },
    )
    got = api.get(
        "tickets:get", filterByTk=ticket["id"], **{"appends[]": ["tags", "category", "location"]}
    )
    assert [t["id"] for t in got["tags"]] == [tag["id"]]
    assert got["category"]["id"] == category["id"] and got["location"]["id"] == child["id"]
    parent = api.get("locations:get", filterByTk=root["id"], **{"appends[]": ["children"]})
    assert [c["id"] for c in parent["children"]] == [child["id"]]
    seen["records"] = "ticketCategories, tags, locations (root + child), tickets with m2m tag"

    # roles and permissions
    roles = {r["name"]: r for r in api.get("roles:list", paginate="false")}
    assert set(roles) == expected.roles, set(roles)
    assert roles["agent"]["title"] == "Helpdesk agent"
    assert roles["agent"]["strategy"] == {"actions": ["view"]}
    resource = api.get(
        "roles/agent/dataSourceResources:get",
        **{"filter[name]": "tickets", "filter[dataSourceKey]": "main", "appends[]": "actions"},
    )
    actions = {a["name"]: a for a in resource["actions"]}
    assert set(actions) == {"view", "create", "update", "destroy"}
    assert sorted(actions["update"]["fields"]) == ["body", "category", "closed", "priority", "tags"]
    seen["roles"] = f"{sorted(roles)}; agent on tickets: {sorted(actions)}"

    # the env variable and the secret, as the running app resolves them in a custom request
    key = f"mm-env-{stamp}"
    api.post(
        "customRequests:create",
        {
            "key": key,
            "options": {
                "url": echo_url + "/echo",
                "method": "POST",
                "headers": [
                    {"name": "X-Key", "value": "{{$env.HELPDESK_KEY}}"},
                    {"name": "X-Url", "value": "{{$env.HELPDESK_URL}}"},
                ],
            },
        },
    )
    r = api.http.post(f"/api/customRequests:send/{key}", json={})
    assert r.status_code == 200, r.text[:500]
    headers = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert headers["x-url"] == expected.env_url
    assert headers["x-key"] == expected.secret
    seen["env"] = "HELPDESK_URL and the HELPDESK_KEY secret resolve"

    users = {u.get("username") for u in api.get("users:list", paginate="false")}
    assert expected.users <= users, f"users lack {expected.users - users}"
    seen["users"] = f"{sorted(u for u in users if u)}"
    return seen
