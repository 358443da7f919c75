"""The rules pages' routes through Airflow's own app (plugin mounted, real auth, real REST API),
on the real NocoBase fixture databases (staging as the source, prod as the target).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.airflowtools import connection_uri, metadata_db, run_dag, summaries, task_states
from tests.factories import connection_document
from tests.pgtools import (
    FIXTURES,
    dsn_for,
    nocobase_databases,
    rows,
    table_text,
)
from tests.uitools import api_token, auth_env, store_root, sync_dags

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

P = "/migrations/rules"
API = f"{P}/api"
AES_PROD = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
SECRETS = {"HELPDESK_URL": "https://helpdesk.prod.invalid/api", "HELPDESK_KEY": "rules-test-secret"}


@pytest.fixture(scope="module")
def dbs() -> Iterator[dict[str, str]]:
    """The NocoBase fixture pair, loaded once for the module (no test here writes to them)."""
    with nocobase_databases() as pair:
        yield pair


@pytest.fixture(scope="module")
def client(dbs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Airflow's API server app in-process; connections as env vars, one in the metadata DB."""
    from fastapi.testclient import TestClient

    store = tmp_path_factory.mktemp("rules-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIGRATION_STORE", store.as_uri())
        for key, value in auth_env(tmp_path_factory.mktemp("rules-auth")).items():
            mp.setenv(key, value)
        mp.setenv("AIRFLOW_CONN_NB_STAGING", connection_uri(dbs["staging"]))
        mp.setenv("AIRFLOW_CONN_NB_SAME", connection_uri(dbs["staging"]))
        mp.setenv("AIRFLOW_CONN_WEB", "http://example.invalid")
        mp.setenv("AIRFLOW_CONN_NB_GONE", connection_uri(dsn_for("mm_no_such_database")))
        metadata_db()
        sync_dags()
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        app = create_app(apps="core")
        test_client = TestClient(app)
        page_app = next(r.app for r in app.routes if getattr(r, "path", None) == "/migrations")
        page_app.state.api_client = lambda request: TestClient(app)
        admin = {"Authorization": f"Bearer {api_token(test_client, 'admin')}"}
        # prod as a connection of the metadata database (the Connections page's kind)
        for conn_id in ("nb_prod", "not_postgres"):
            test_client.delete(f"/api/v2/connections/{conn_id}", headers=admin)
        app_env = {"app_env": {"APP_AES_SECRET_KEY": AES_PROD}}
        created = test_client.post(
            "/api/v2/connections",
            headers=admin,
            json={
                "connection_id": "nb_prod",
                **connection_document(
                    dbs["prod"], extra=json.dumps(app_env), description="NocoBase prod"
                ),
            },
        )
        assert created.status_code == 201, created.text
        created = test_client.post(
            "/api/v2/connections",
            headers=admin,
            json={"connection_id": "not_postgres", "conn_type": "http", "host": "example.invalid"},
        )
        assert created.status_code == 201, created.text
        yield test_client
        purge_cached_app()


def _message(resp: Any) -> str:
    detail = resp.json()["detail"]
    if isinstance(detail, dict):
        return "\n".join([detail["message"], *detail.get("problems", [])])
    return json.dumps(detail)


def _tables(client: Any, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    params.setdefault("source", "nb_staging")
    if isinstance(params.get("rules"), dict):
        params["rules"] = json.dumps(params["rules"])
    resp = client.get(f"{API}/tables", headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


# --- auth -------------------------------------------------------------------------------------

ROUTES = [
    ("GET", P),
    ("GET", f"{P}/sets"),
    ("GET", f"{P}/runs/migration_sync/manual__x"),
    ("GET", f"{API}/connections"),
    ("GET", f"{API}/tables?source=nb_staging"),
    ("POST", f"{API}/preview"),
    ("GET", f"{API}/rule-sets"),
    ("GET", f"{API}/rule-sets/nightly"),
    ("PUT", f"{API}/rule-sets/nightly"),
    ("DELETE", f"{API}/rule-sets/nightly"),
    ("POST", f"{API}/start"),
    ("GET", f"{API}/runs/migration_sync/manual__x"),
    ("GET", f"{P}/static/rules.js"),
    ("GET", f"{P}/static/rules.css"),
]


def test_every_route_refuses_anonymous_requests(client: Any) -> None:
    for method, url in ROUTES:
        resp = client.request(method, url, json={})
        assert resp.status_code == 401, (method, url, resp.status_code)
    resp = client.get(P, headers={"Authorization": "Bearer forged"})
    assert resp.status_code in (401, 403)


def test_viewer_may_look_but_not_preview_save_delete_or_start(
    client: Any, viewer: dict[str, str]
) -> None:
    assert client.get(P, headers=viewer).status_code == 200
    assert client.get(f"{API}/tables?source=nb_staging", headers=viewer).status_code == 200
    body = {"source_conn_id": "nb_staging"}
    for method, url, payload in (
        ("POST", f"{API}/preview", body),
        ("PUT", f"{API}/rule-sets/viewer-set", body),
        ("DELETE", f"{API}/rule-sets/viewer-set", None),
        ("POST", f"{API}/start", {**body, "action": "create"}),
    ):
        assert client.request(method, url, headers=viewer, json=payload).status_code == 403, url
    assert not (store_root() / "rule_sets" / "viewer-set.yaml").exists()


# --- connections and tables ---------------------------------------------------------------------


def test_connections_lists_postgres_ones_from_the_database_and_the_environment(
    client: Any, admin: dict[str, str]
) -> None:
    resp = client.get(f"{API}/connections", headers=admin)
    assert resp.status_code == 200
    found = {c["conn_id"]: c for c in resp.json()["connections"]}
    assert found["nb_prod"]["origin"] == "database"
    assert found["nb_prod"]["description"] == "NocoBase prod"
    assert found["nb_staging"]["origin"] == "environment"
    assert "web" not in found and "not_postgres" not in found  # other types are not offered
    assert all("password" not in c for c in found.values())


def test_tables_in_groups_with_key_kinds_rows_rules_and_refusals(
    client: Any, admin: dict[str, str]
) -> None:
    view = _tables(client, admin)
    assert view["profile"] == "nocobase" and view["problems"] == []
    tables = {t["name"]: t for t in view["tables"]}
    assert len(tables) == 111
    assert {t["group"] for t in tables.values()} == {"system", "user"}
    user = sorted(n for n, t in tables.items() if t["group"] == "user")
    assert {"tickets", "tags", "ticketCategories", "locations", "t_ay3lia9mgg1"} <= set(user)
    kinds = {n: tables[n]["key_kind"] for n in ("ticketCategories", "uiSchemas", "t_ay3lia9mgg1")}
    assert kinds == {
        "ticketCategories": "serial",
        "uiSchemas": "string",
        "t_ay3lia9mgg1": "composite",
    }
    assert tables["main_locations_path"]["key_kind"] == "none"
    assert tables["tickets"]["estimated_rows"] == 29
    assert tables["uiSchemas"]["rule"] == "overwrite"  # the profile's default
    assert tables["tickets"]["rule"] == "schema-only"  # user default
    # upsert / insert-ignore refused on an auto-increment table, with planning's own reason
    cats = tables["ticketCategories"]
    assert cats["choices"]["overwrite"] is None
    assert cats["choices"]["upsert"] == (
        "ticketCategories: upsert (chosen) is refused for tables with an auto-increment id "
        "(id is serial); use overwrite or schema-only"
    )
    assert cats["refused"] == [
        {
            "rules": ["upsert", "insert-ignore"],
            "why": "auto-increment id (id is serial)",
        }
    ]
    assert "needs a primary key" in tables["main_locations_path"]["choices"]["insert-ignore"]
    assert tables["t_ay3lia9mgg1"]["companion_of"] == ["tags", "tickets"]

    # the rules given change the rule each table gets now
    rules = {
        "system": {"default": "skip"},
        "user": {"default": "schema-only", "independent": {"tickets": "overwrite"}},
    }
    again = {t["name"]: t for t in _tables(client, admin, rules=rules)["tables"]}
    assert again["tickets"]["rule"] == "overwrite"
    assert again["tickets"]["rule_source"] == "independent rule"
    assert again["uiSchemas"]["rule"] == "skip"


def test_tables_report_what_planning_would_refuse(client: Any, admin: dict[str, str]) -> None:
    rules = {"user": {"independent": {"ticketCategories": "upsert", "nope": "overwrite"}}}
    view = _tables(client, admin, rules=rules)
    assert any(p.startswith("ticketCategories: upsert") for p in view["problems"])
    assert any(p.startswith("nope: an independent rule") for p in view["problems"])


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"source": "nowhere"}, 404, "Airflow has no connection 'nowhere'"),
        ({"source": "not_postgres"}, 400, "is of type 'http'"),
        ({"source": "web"}, 400, "choose a postgres connection"),
        ({"source": "nb_gone"}, 502, 'database "mm_no_such_database" does not exist'),
        (
            {"rules": '{"user": {"default": "copy"}}'},
            400,
            "rules.user.default: unknown rule 'copy'",
        ),
        ({"rules": "{not json"}, 400, "rules: not valid JSON"),
        ({"rules": '{"users": {}}'}, 400, "unknown key(s) 'users'"),
        ({"profile": "wordpress"}, 400, "wordpress"),
        ({"rule_set": "../etc"}, 400, "is not allowed"),
        ({"rule_set": "never-saved"}, 404, "does not exist"),
    ],
)
def test_tables_refusals(
    client: Any, admin: dict[str, str], params: dict[str, str], status: int, message: str
) -> None:
    resp = client.get(f"{API}/tables", headers=admin, params={"source": "nb_staging", **params})
    assert resp.status_code == status, resp.text
    assert message in _message(resp)


# --- preview ------------------------------------------------------------------------------------


def test_preview_without_a_target_is_the_plan(client: Any, admin: dict[str, str]) -> None:
    resp = client.post(f"{API}/preview", headers=admin, json={"source_conn_id": "nb_staging"})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["results"] is None and len(out["plan"]) == 111
    plan = {t["name"]: t for t in out["plan"]}
    assert plan["uiSchemas"] == {
        "name": "uiSchemas",
        "group": "system",
        "rule": "overwrite",
        "rule_source": "system default: the profile's rule",
        "key_kind": "string",
    }


def test_preview_against_a_target_writes_nothing(
    client: Any, admin: dict[str, str], dbs: dict[str, str]
) -> None:
    before = {t: table_text(dbs["prod"], t) for t in ("uiSchemas", "roles", "users")}
    count = rows(dbs["prod"], "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    rules = {"user": {"default": "schema-only", "independent": {"tickets": "overwrite"}}}
    resp = client.post(
        f"{API}/preview",
        headers=admin,
        json={"source_conn_id": "nb_staging", "target_conn_id": "nb_prod", "rules": rules},
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    # a dry run as a DAG run, not work inside the API server: nothing computed yet
    assert out["results"] is None and out["run"]["dag_id"] == "migration_sync"
    conf = out["run"]["conf"]
    assert conf == {
        "source_conn_id": "nb_staging",
        "profile": "nocobase",
        "rules": conf["rules"],
        "target_conn_id": "nb_prod",
        "allow_drop": False,
        "dry_run": True,
    }
    assert conf["rules"]["user"]["independent"] == {"tickets": "overwrite"}
    waiting = client.get(out["run"]["result"], headers=admin).json()
    assert waiting["state"] == "queued" and waiting["results"] is None
    assert not waiting["finished"]
    # the scheduler's part, here: the run of that conf
    dag_run = run_dag("migration_sync", conf)
    assert str(dag_run.state) == "success", task_states(dag_run)
    got = client.get(f"{API}/previews/{quote(dag_run.run_id, safe='')}", headers=admin)
    assert got.status_code == 200, got.text
    out = got.json()
    assert out["finished"] and out["log_page"] and out["target_conn_id"] == "nb_prod"
    results = {r["table"]: r for r in out["results"]}
    assert results["tickets"]["inserted"] == 29 and results["tickets"]["changes"] == [
        "table created"
    ]
    assert results["tags"]["inserted"] == 0 and results["tags"]["changes"] == ["table created"]
    assert results["users"]["changes"] == ["1 column added"]  # users.department
    assert results["roles"]["rule"] == "overwrite" and results["roles"]["deleted"] == 1  # auditor
    assert "data_sql" not in results["tickets"]
    assert out["totals"]["tables_created"] == 7
    assert out["totals"]["inserted"] == sum(r["inserted"] for r in out["results"])
    # nothing was written
    assert {t: table_text(dbs["prod"], t) for t in ("uiSchemas", "roles", "users")} == before
    assert rows(dbs["prod"], "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == count


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"rules": {"user": {"independent": {"ticketCategories": "upsert"}}}},
            400,
            "ticketCategories: upsert (independent rule) is refused for tables with an auto-increment id",
        ),
        (
            {"rules": {"user": {"default": "insert-ignore"}}},
            400,
            "main_locations_path: insert-ignore",
        ),
        (
            {"rules": {"user": {"independent": {"no_such_table": "overwrite"}}}},
            400,
            "no_such_table: an independent rule (user: overwrite) names a table the source does not have",
        ),
        ({"source_conn_id": "nowhere"}, 404, "Airflow has no connection 'nowhere'"),
        ({"target_conn_id": "nowhere"}, 404, "Airflow has no connection 'nowhere'"),
        ({"target_conn_id": "nb_same"}, 400, "the same database"),
        ({"rules": {"user": {"default": "copy"}}}, 400, "unknown rule 'copy'"),
        ({"rule_set": "a/b"}, 400, "is not allowed"),
        ({"rule_set": "nightly", "rules": {}}, 400, "not both"),
        ({"surprise": True}, 422, "surprise"),
    ],
)
def test_preview_refusals(
    client: Any, admin: dict[str, str], body: dict[str, Any], status: int, message: str
) -> None:
    payload = {"source_conn_id": "nb_staging", "target_conn_id": "nb_prod", **body}
    resp = client.post(f"{API}/preview", headers=admin, json=payload)
    assert resp.status_code == status, resp.text
    assert message in _message(resp)


# --- rule sets ------------------------------------------------------------------------------------


def test_rule_sets_save_list_edit_delete(client: Any, admin: dict[str, str]) -> None:
    rules = {
        "system": {"default": "profile", "independent": {}},
        "user": {"default": "schema-only", "independent": {"tickets": "overwrite"}},
    }
    body = {"source_conn_id": "nb_staging", "profile": "nocobase", "rules": rules}
    resp = client.put(
        f"{API}/rule-sets/crud-set", headers=admin, json={**body, "description": "one"}
    )
    assert resp.status_code == 200, resp.text
    path = store_root() / "rule_sets" / "crud-set.yaml"
    import yaml

    saved = yaml.safe_load(path.read_text())
    assert saved == {
        "name": "crud-set",
        "description": "one",
        "profile": "nocobase",
        "source_conn_id": "nb_staging",
        "rules": rules,
    }
    listed = client.get(f"{API}/rule-sets", headers=admin).json()
    assert "crud-set" in [r["name"] for r in listed["rule_sets"]]
    one = client.get(f"{API}/rule-sets/crud-set", headers=admin).json()
    assert one["rules"] == rules and one["yaml"] == path.read_text()
    # edit: the same name saved again replaces it
    rules["user"]["independent"] = {"tickets": "overwrite", "tags": "overwrite"}
    resp = client.put(f"{API}/rule-sets/crud-set", headers=admin, json={**body, "rules": rules})
    assert resp.status_code == 200
    assert yaml.safe_load(path.read_text())["rules"]["user"]["independent"] == {
        "tickets": "overwrite",
        "tags": "overwrite",
    }
    # the pages show it
    page = client.get(f"{P}/sets", headers=admin).text
    assert "crud-set" in page and "tickets: overwrite, tags: overwrite" in page
    page = client.get(f"{P}?rule_set=crud-set", headers=admin).text
    assert "rule set crud-set" in page
    assert client.delete(f"{API}/rule-sets/crud-set", headers=admin).status_code == 204
    assert not path.exists()
    assert client.delete(f"{API}/rule-sets/crud-set", headers=admin).status_code == 404
    assert client.get(f"{API}/rule-sets/crud-set", headers=admin).status_code == 404
    assert client.get(f"{P}?rule_set=crud-set", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"rules": {"user": {"independent": {"ticketCategories": "insert-ignore"}}}},
            400,
            "ticketCategories: insert-ignore (independent rule) is refused",
        ),
        (
            {"rules": {"system": {"independent": {"nope": "overwrite"}}}},
            400,
            "nope: an independent rule (system: overwrite) names a table the source does not have",
        ),
        ({"source_conn_id": "nowhere"}, 404, "Airflow has no connection 'nowhere'"),
        ({"profile": "nope"}, 400, "nope"),
        ({"rules": {"user": {"default": "profile"}}}, 400, "unknown rule 'profile'"),
        ({"source_conn_id": ""}, 422, "source_conn_id"),
    ],
)
def test_rule_set_save_refusals(
    client: Any, admin: dict[str, str], body: dict[str, Any], status: int, message: str
) -> None:
    payload = {"source_conn_id": "nb_staging", **body}
    resp = client.put(f"{API}/rule-sets/refused-set", headers=admin, json=payload)
    assert resp.status_code == status, resp.text
    assert message in _message(resp)
    assert not (store_root() / "rule_sets" / "refused-set.yaml").exists()


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fescaped",
        "%2E%2E",
        "a%5Cb",
        ".hidden",
        "has%20space",
        "x" * 65,
        "a..b",
        "%C3%BCn%C3%AFcode",
        "..",
    ],
)
def test_rule_set_names_with_path_characters_are_refused(
    client: Any, admin: dict[str, str], name: str
) -> None:
    root = store_root()
    before = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    body = {"source_conn_id": "nb_staging"}
    for method in ("PUT", "GET", "DELETE"):
        resp = client.request(method, f"{API}/rule-sets/{name}", headers=admin, json=body)
        assert resp.status_code in (400, 404), (method, name, resp.status_code)
        if resp.status_code == 400:
            assert "is not allowed" in _message(resp)
    assert sorted(p.relative_to(root.parent) for p in root.parent.rglob("*")) == before


# --- start ------------------------------------------------------------------------------------------


def test_start_create_with_rules_triggers_migration_create(
    client: Any, admin: dict[str, str]
) -> None:
    rules = {"system": {"default": "profile"}, "user": {"default": "overwrite"}}
    resp = client.post(
        f"{API}/start",
        headers=admin,
        json={"action": "create", "source_conn_id": "nb_staging", "rules": rules},
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["dag_id"] == "migration_create" and out["unpaused"] is True
    run = client.get(f"/api/v2/dags/migration_create/dagRuns/{quote(out['run_id'])}", headers=admin)
    conf = run.json()["conf"]
    assert conf == {
        "source_conn_id": "nb_staging",
        "profile": "nocobase",
        "rules": {
            "system": {"default": "profile", "independent": {}},
            "user": {"default": "overwrite", "independent": {}},
        },
    }
    assert run.json()["triggering_user_name"] == "admin"
    assert "rules page" in (run.json().get("note") or "")
    assert client.get("/api/v2/dags/migration_create", headers=admin).json()["is_paused"] is False
    # the landing page follows the run
    assert out["url"] == f"{P}/runs/migration_create/{quote(out['run_id'], safe='')}"
    page = client.get(out["url"], headers=admin)
    assert page.status_code == 200 and "Creating a migration file" in page.text
    state = client.get(
        f"{API}/runs/migration_create/{quote(out['run_id'], safe='')}", headers=admin
    ).json()
    assert state["state"] == "queued" and state["log_page"] is None and not state["finished"]
    # once the run's log is in the store, the landing page sends the browser to its page
    from migration_manager import run_files, run_record, store_layout

    folder = store_root() / "logs" / "mig-x" / store_layout.safe_component(out["run_id"])
    folder.mkdir(parents=True)
    (folder / run_files.RECORD).write_text('{"format": "migration-man')  # still being written
    state_url = f"{API}/runs/migration_create/{quote(out['run_id'], safe='')}"
    assert client.get(state_url, headers=admin).json()["log_page"] is None
    (folder / run_files.RECORD).write_text(json.dumps({"format": run_record.LOG_FORMAT}))
    state = client.get(state_url, headers=admin).json()
    assert (
        state["log_page"] == f"/migrations/runs/mig-x/{store_layout.safe_component(out['run_id'])}"
    )


def test_start_sync_with_a_rule_set(client: Any, admin: dict[str, str]) -> None:
    body = {
        "source_conn_id": "nb_staging",
        "rules": {"user": {"independent": {"tickets": "overwrite"}}},
    }
    assert client.put(f"{API}/rule-sets/sync-set", headers=admin, json=body).status_code == 200
    resp = client.post(
        f"{API}/start",
        headers=admin,
        json={
            "action": "sync",
            "rule_set": "sync-set",
            "target_conn_id": "nb_prod",
            "on_missing_plugins": "continue",
            "on_missing_env": "fail",
        },
    )
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["dag_id"] == "migration_sync"
    run = client.get(f"/api/v2/dags/migration_sync/dagRuns/{quote(out['run_id'])}", headers=admin)
    assert run.json()["conf"] == {
        "source_conn_id": "nb_staging",
        "rule_set": "sync-set",
        "target_conn_id": "nb_prod",
        "allow_drop": False,
        "on_missing_plugins": "continue",
        "on_missing_env": "fail",
    }
    page = client.get(out["url"], headers=admin)
    assert page.status_code == 200 and "Syncing" in page.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"action": "sync", "rules": {"user": {"independent": {"ticketCategories": "upsert"}}}},
            400,
            "ticketCategories: upsert (independent rule) is refused",
        ),
        (
            {"action": "create", "rules": {"user": {"independent": {"ghost": "skip"}}}},
            400,
            "ghost: an independent rule (user: skip) names a table the source does not have",
        ),
        ({"action": "sync", "target_conn_id": None}, 400, "needs a target connection"),
        ({"action": "sync", "target_conn_id": "nowhere"}, 404, "no connection 'nowhere'"),
        ({"action": "sync", "target_conn_id": "nb_same"}, 400, "the same database"),
        ({"action": "create", "source_conn_id": "nowhere"}, 404, "no connection 'nowhere'"),
        ({"action": "create", "rule_set": "never-saved"}, 404, "does not exist"),
        ({"action": "create", "rule_set": "../../x"}, 400, "is not allowed"),
        ({"action": "drop-everything"}, 422, "action"),
        ({"action": "sync", "on_missing_plugins": "maybe"}, 422, "on_missing_plugins"),
    ],
)
def test_start_refusals(
    client: Any, admin: dict[str, str], body: dict[str, Any], status: int, message: str
) -> None:
    before = client.get("/api/v2/dags/~/dagRuns", headers=admin).json()["total_entries"]
    payload = {"source_conn_id": "nb_staging", "target_conn_id": "nb_prod", **body}
    resp = client.post(f"{API}/start", headers=admin, json=payload)
    assert resp.status_code == status, resp.text
    assert message in _message(resp)
    assert client.get("/api/v2/dags/~/dagRuns", headers=admin).json()["total_entries"] == before


def test_unknown_runs_are_404(client: Any, admin: dict[str, str]) -> None:
    assert client.get(f"{API}/runs/migration_sync/no-such-run", headers=admin).status_code == 404
    assert client.get(f"{P}/runs/migration_sync/no-such-run", headers=admin).status_code == 404
    assert client.get(f"{API}/runs/bad%20dag/x", headers=admin).status_code == 404


# --- pages --------------------------------------------------------------------------------------------


def test_new_migration_page(client: Any, admin: dict[str, str]) -> None:
    resp = client.get(P, headers=admin, params={"source": "nb_staging", "target": "nb_prod"})
    assert resp.status_code == 200
    html = resp.text
    assert "User-defined tables" in html and "System tables" in html
    assert 'data-table="ticketCategories"' in html
    # rules a table cannot take: disabled, with planning's reason as the tooltip and inline
    assert (
        '<option value="upsert"  disabled title="ticketCategories: upsert (chosen) is refused for '
        "tables with an auto-increment id (id is serial); use overwrite or schema-only"
    ) in html
    assert "No upsert, insert-ignore: auto-increment id (id is serial)" in html
    assert "No upsert, insert-ignore: no primary key" in html  # main_locations_path
    assert "each table's default" in html
    assert f'src="{P}/static/rules.js"' in html
    assert '<option value="nb_prod" selected>' in html
    # no source yet: the page asks for one
    empty = client.get(P, headers=admin).text
    assert "Choose the source connection" in empty
    # an unknown source: the page says so
    gone = client.get(P, headers=admin, params={"source": "nowhere"})
    assert gone.status_code == 404 and "Airflow has no connection" in gone.text


def test_static_files(client: Any, admin: dict[str, str]) -> None:
    js = client.get(f"{P}/static/rules.js", headers=admin)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    css = client.get(f"{P}/static/rules.css", headers=admin)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get(f"{P}/static/..%2Fapp.py", headers=admin).status_code == 404
    assert client.get(f"{P}/static/style.css", headers=admin).status_code == 404


# --- the preview equals what a run then does ------------------------------------------------------------


def test_preview_through_the_route_equals_the_sync_run(
    client: Any,
    admin: dict[str, str],
    nocobase_pair: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging, prod = nocobase_pair
    monkeypatch.setenv("AIRFLOW_CONN_PVR_SOURCE", connection_uri(staging))
    monkeypatch.setenv(
        "AIRFLOW_CONN_PVR_TARGET", connection_uri(prod, {"APP_AES_SECRET_KEY": AES_PROD})
    )
    rules = {
        "system": {"default": "profile", "independent": {"systemSettings": "skip"}},
        "user": {
            "default": "schema-only",
            "independent": {"tickets": "overwrite", "tags": "overwrite", "locations": "overwrite"},
        },
    }
    saved = client.put(
        f"{API}/rule-sets/pvr", headers=admin, json={"source_conn_id": "pvr_source", "rules": rules}
    )
    assert saved.status_code == 200, saved.text
    resp = client.post(
        f"{API}/preview",
        headers=admin,
        json={"source_conn_id": "pvr_source", "target_conn_id": "pvr_target", "rule_set": "pvr"},
    )
    assert resp.status_code == 200, resp.text
    conf = resp.json()["run"]["conf"]
    assert conf["rule_set"] == "pvr" and conf["dry_run"] is True
    dry = run_dag("migration_sync", conf)  # the triggered preview, run
    assert str(dry.state) == "success", task_states(dry)
    preview = client.get(f"{API}/previews/{quote(dry.run_id, safe='')}", headers=admin).json()
    previewed = {r["table"]: r for r in preview["results"]}

    dag_run = run_dag(
        "migration_sync",
        {
            "source_conn_id": "pvr_source",
            "target_conn_id": "pvr_target",
            "rule_set": "pvr",
            "env_values": SECRETS,
            "on_missing_plugins": "continue",
        },
    )
    assert str(dag_run.state) == "success", task_states(dag_run)
    summary = next(s for s in summaries() if s["run_id"] == dag_run.run_id)
    ran = {t["table"]: t for t in summary["tables"]}
    assert set(previewed) == set(ran)
    keys = ("rule", "status", "ddl", "inserted", "updated", "deleted", "unchanged")
    differ = {
        t: ({k: previewed[t][k] for k in keys}, {k: ran[t][k] for k in keys})
        for t in ran
        if any(previewed[t][k] != ran[t][k] for k in keys)
    }
    assert differ == {}
    # the rules of the rule set were the ones used
    assert ran["tickets"]["rule"] == "overwrite" and ran["tickets"]["inserted"] == 29
    assert ran["systemSettings"]["rule"] == "skip"
    assert ran["t_ay3lia9mgg1"]["rule"] == "overwrite" and ran["t_ay3lia9mgg1"]["inserted"] == 51
    assert sum(t["inserted"] for t in ran.values()) == preview["totals"]["inserted"]
    assert rows(prod, 'SELECT title FROM "systemSettings"') == [("Prod",)]
