"""The DAGs run for real (``dag.test()``) against real PostgreSQL; the database's final state is asserted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.airflowtools import connection_uri, run_dag, set_connections, summaries, task_states
from tests.pgtools import FIXTURES, rows, scalar, sql, table_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]


def _tables(dsn: str) -> set[str]:
    return {r[0] for r in rows(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _latest_summary(dag_run: Any) -> dict[str, Any]:
    found = [s for s in summaries() if s.get("run_id") == dag_run.run_id]
    assert found, "collect_logs wrote no summary for this run"
    return found[-1]


def test_sync_promotes_nocobase_staging_into_prod(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    set_connections(monkeypatch, migration_source=staging)
    prod_key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MIGRATION_TARGET", connection_uri(prod, {"APP_AES_SECRET_KEY": prod_key})
    )
    prod_users = table_text(prod, "users")
    prod_roles_users = table_text(prod, "rolesUsers")
    # prod lacks staging's two environment variables and the graph-collection-manager plugin
    conf = {
        "env_values": {"HELPDESK_URL": "https://helpdesk.prod.invalid", "HELPDESK_KEY": "prod-key"},
        "on_missing_plugins": "continue",
    }

    dag_run = run_dag("migration_sync", conf)
    assert str(dag_run.state) == "success", task_states(dag_run)
    summary = _latest_summary(dag_run)
    assert summary["status"] == "success"
    rule = {t["table"]: t["rule"] for t in summary["tables"]}

    # overwrite: exactly staging's rows
    overwritten = [t for t, r in rule.items() if r == "overwrite"]
    assert {
        "uiSchemas",
        "fields",
        "collections",
        "applicationPlugins",
        "systemSettings",
        "graphPositions",
    } <= set(overwritten)
    prod_storage = scalar(prod, "SELECT id FROM storages")  # read after the run: see below
    for table in set(overwritten) - {"storages"}:
        assert table_text(prod, table) == table_text(staging, table), table
    # storages is matched by its unique name: staging's values under prod's own id, which
    # prod's attachments (its logo) refer to
    assert rows(prod, "SELECT name, type, options FROM storages") == rows(
        staging, "SELECT name, type, options FROM storages"
    )
    assert prod_storage != scalar(staging, "SELECT id FROM storages")
    assert scalar(prod, 'SELECT "storageId" FROM attachments') == prod_storage
    assert scalar(prod, "SELECT options->>'title' FROM \"systemSettings\"") == scalar(
        staging, "SELECT options->>'title' FROM \"systemSettings\""
    )

    # companions follow their collections
    assert rule["main_desktopRoutes_path"] == rule["desktopRoutes"] == "overwrite"
    assert rule["t_ay3lia9mgg1"] == "schema-only"  # tickets and tags are user-defined: schema-only
    assert rule["main_locations_path"] == rule["locations"] == "schema-only"
    assert rule["rolesUsers"] == "schema-only"  # users is schema-only, so its link to roles is too

    # user-defined collections exist in prod, empty, with staging's columns
    for table in (
        "tickets",
        "tags",
        "ticketCategories",
        "locations",
        "main_locations_path",
        "t_ay3lia9mgg1",
    ):
        assert table in _tables(prod), table
        assert scalar(prod, f'SELECT count(*) FROM "{table}"') == 0, table
        cols = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s ORDER BY 1"
        assert rows(prod, cols, (table,)) == rows(staging, cols, (table,)), table

    # schema-only tables keep prod's rows and gain staging's new columns
    assert rule["users"] == "schema-only"
    assert scalar(prod, "SELECT count(*) FROM users") == 4
    assert [r for r in table_text(prod, "users")] != [] and len(prod_users) == 4
    assert sorted(r[0] for r in rows(prod, "SELECT username FROM users")) == sorted(
        ["nocobase", "petra", "quentin", "rita"]
    )
    assert (
        scalar(
            prod,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'department'",
        )
        == 1
    )
    assert table_text(prod, "rolesUsers") == prod_roles_users

    # every serial sequence is past its table's largest id
    seqs = rows(
        prod,
        """
        SELECT c.relname, a.attname, pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
          AND pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) IS NOT NULL
        """,
    )
    assert len(seqs) >= 27
    for table, column, seq in seqs:
        top = scalar(prod, f'SELECT max("{column}") FROM "{table}"')
        if top is None:
            continue
        last, called = rows(prod, f"SELECT last_value, is_called FROM {seq}")[0]
        assert (last if called else last - 1) >= top, (table, seq, last, top)

    # a second run changes nothing
    before = {t: table_text(prod, t) for t in _tables(prod)}
    second = run_dag("migration_sync", {"on_missing_plugins": "continue"})
    assert str(second.state) == "success", task_states(second)
    again = _latest_summary(second)
    changed = [t for t in again["tables"] if t["status"] not in ("unchanged", "skipped")]
    assert changed == []
    # nothing to apply: no unit mapped, no backup, no lock, nothing written; the log is written
    states = task_states(second)
    assert all(s == "skipped" for s in states["apply_table"]), states
    for task in ("hold_target_lock", "target_locked", "backup", "env_write", "rollback"):
        assert states[task] == ["skipped"], (task, states)
    assert states["collect_logs"] == ["success"]
    assert again["backup"] is None
    assert all(t["reason"] for t in again["tables"] if t["status"] == "unchanged")
    assert again["totals"] == {
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "unchanged": again["totals"]["unchanged"],
        "ddl": 0,
    }
    assert {t: table_text(prod, t) for t in _tables(prod)} == before


def test_create_then_execute(source: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sql(
        source,
        """
        CREATE TABLE "uiSchemas" ("x-uid" varchar(255) PRIMARY KEY, "schema" json, "createdAt" timestamptz);
        INSERT INTO "uiSchemas" VALUES ('a-1', '{"type":"void"}', now()), ('b-2', '{"x":1}', NULL);
        CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(10,2), tags text[]);
        INSERT INTO orders SELECT g, g * 1.5, ARRAY['t' || g] FROM generate_series(1, 500) g;
        """,
    )
    sql(
        target,
        "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(10,2)); INSERT INTO orders VALUES (1, 99), (9999, 1);",
    )
    set_connections(monkeypatch, migration_source=source, migration_target=target)

    created = run_dag(
        "migration_create",
        {
            "profile": "generic",
            "rules": {
                "user": {
                    "default": "schema-only",
                    "independent": {"uiSchemas": "overwrite", "orders": "upsert"},
                }
            },
        },
    )
    assert str(created.state) == "success", task_states(created)
    from tests.airflowtools import xcom

    uri = xcom(created, "create_migration_file")
    assert uri.startswith("file://") and uri.endswith(".zip")

    executed = run_dag("migration_execute", {"migration_file": uri})
    assert str(executed.state) == "success", task_states(executed)
    assert table_text(target, "uiSchemas") == table_text(source, "uiSchemas")
    assert scalar(target, "SELECT count(*) FROM orders") == 501  # upsert keeps 9999
    assert scalar(target, "SELECT total FROM orders WHERE id = 1") == pytest.approx(1.5)
    assert scalar(target, "SELECT tags FROM orders WHERE id = 2") == ["t2"]
    summary = _latest_summary(executed)
    by_table = {t["table"]: t for t in summary["tables"]}
    assert by_table["orders"]["inserted"] == 499 and by_table["orders"]["updated"] == 1
    assert any("ADD COLUMN tags" in s for s in by_table["orders"]["ddl"])


def test_failed_unit_fails_the_run(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit that cannot apply fails the run (an ALL_DONE collector alone would leave it green)."""
    sql(
        source,
        """
        CREATE TABLE good (id int PRIMARY KEY, v text); INSERT INTO good VALUES (1, 'x');
        CREATE TABLE bad (id int PRIMARY KEY, v integer); INSERT INTO bad VALUES (1, 1);
        """,
    )
    # the type change text -> integer cannot take the target's 'seven'
    sql(
        target,
        "CREATE TABLE bad (id int PRIMARY KEY, v text); INSERT INTO bad VALUES (7, 'seven');",
    )
    set_connections(monkeypatch, migration_source=source, migration_target=target)
    # without the automatic rollback (test_rollback_dags.py), so the good unit stays applied
    dag_run = run_dag(
        "migration_sync",
        {
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "rollback_on_failure": False,
        },
    )
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["collect_logs"] == ["failed"]
    assert sorted(states["apply_table"]) == ["failed", "success"]
    assert table_text(target, "good") == ["(1,x)"]
    assert table_text(target, "bad") == ["(7,seven)"]  # rolled back: untouched
    summary = _latest_summary(dag_run)
    assert summary["status"] == "failed"
    assert summary["failed_units"][0]["tables"] == ["bad"]
