"""The rules page's engine: the source's tables with their rules, and a preview equal to the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_manager.preview import inspect_source, preview
from tests.pgtools import apply_file, make_file, rows, sql, table_text

pytestmark = pytest.mark.postgres


def test_inspect_nocobase_fixture(nocobase_pair: tuple[str, str]) -> None:
    staging, _prod = nocobase_pair
    view = inspect_source(
        staging, rules={"user": {"default": "schema-only", "independent": {"tickets": "upsert"}}}
    )
    tables = {t.name: t for t in view.tables}
    assert view.problems == ()
    assert tables["uiSchemas"].group == "system" and tables["uiSchemas"].key_kind == "string"
    assert tables["tickets"].group == "user" and tables["tickets"].rule == "upsert"
    assert tables["tickets"].rule_source == "independent rule"
    assert tables["ticketCategories"].key_kind == "serial"
    # rules a table cannot take are refused with the reason planning would give
    assert tables["ticketCategories"].choices["upsert"] is not None
    assert "auto-increment" in str(tables["ticketCategories"].choices["insert-ignore"])
    assert tables["ticketCategories"].choices["overwrite"] is None
    assert "primary key" in str(tables["main_locations_path"].choices["upsert"])
    assert tables["t_ay3lia9mgg1"].key_kind == "composite" and tables[
        "t_ay3lia9mgg1"
    ].companion_of == ("tags", "tickets")
    # users allows only schema-only, overwrite, skip (collections.options.migrationRules)
    assert tables["users"].choices["upsert"] is not None
    assert tables["users"].estimated_rows is not None and tables["users"].estimated_rows >= 0


def test_row_counts_of_a_source_never_analysed(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reltuples is -1 until a table is analysed: a small table is counted, a large one is
    "unknown" (None), never 0; an analysed one keeps the planner's estimate."""
    from migration_manager.schema import catalog

    sql(
        source,
        """
        CREATE TABLE small (id int PRIMARY KEY) WITH (autovacuum_enabled = false);
        INSERT INTO small SELECT generate_series(1, 37);
        CREATE TABLE large (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
        INSERT INTO large SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g;
        CREATE TABLE analysed (id int PRIMARY KEY) WITH (autovacuum_enabled = false);
        INSERT INTO analysed SELECT generate_series(1, 12);
        ANALYZE analysed;
        """,
    )
    assert rows(source, "SELECT reltuples FROM pg_class WHERE relname = 'large'") == [(-1,)]
    monkeypatch.setattr(catalog, "SMALL_TABLE_BYTES", 64 << 10)  # large has ~450 kB
    view = inspect_source(source, profile="generic")
    counts = {t.name: t.estimated_rows for t in view.tables}
    assert counts == {"small": 37, "large": None, "analysed": 12}


def test_inspect_reports_problems_without_raising(nocobase_pair: tuple[str, str]) -> None:
    staging, _prod = nocobase_pair
    view = inspect_source(
        staging,
        rules={"user": {"independent": {"ticketCategories": "upsert", "nope": "overwrite"}}},
    )
    assert any(p.startswith("ticketCategories:") for p in view.problems)
    assert any(p.startswith("nope:") for p in view.problems)
    assert {t.name: t for t in view.tables}["ticketCategories"].problem is not None


def test_preview_equals_the_run(source: str, target: str, tmp_path: Path) -> None:
    sql(
        source,
        """
        CREATE TABLE "uiSchemas" ("x-uid" varchar(64) PRIMARY KEY, schema json, extra text);
        INSERT INTO "uiSchemas" SELECT 'u-' || g, json_build_object('n', g), 'e' FROM generate_series(1, 50) g;
        CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);
        INSERT INTO orders SELECT g, g FROM generate_series(1, 30) g;
        CREATE TABLE logs (msg text);
        INSERT INTO logs VALUES ('a'), ('b');
        """,
    )
    sql(
        target,
        """
        CREATE TABLE "uiSchemas" ("x-uid" varchar(64) PRIMARY KEY, schema json);
        INSERT INTO "uiSchemas" SELECT 'u-' || g, json_build_object('n', g * 2) FROM generate_series(20, 70) g;
        CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);
        INSERT INTO orders SELECT g, g FROM generate_series(25, 40) g;
        """,
    )
    rules = {"user": {"default": "overwrite", "independent": {"orders": "insert-ignore"}}}
    before = {t: table_text(target, t) for t in ("uiSchemas", "orders")}
    previewed = {r.table: r for r in preview(source, target, profile="generic", rules=rules)}
    # a preview writes nothing
    assert {t: table_text(target, t) for t in ("uiSchemas", "orders")} == before
    assert previewed["logs"].ddl and previewed["uiSchemas"].ddl

    make_file(source, tmp_path / "m.zip", rules=rules)
    ran = apply_file(tmp_path / "m.zip", target)
    for table in ("uiSchemas", "orders", "logs"):
        p, r = previewed[table], ran[table]
        assert (p.rule, p.status, p.ddl, p.inserted, p.updated, p.deleted, p.unchanged) == (
            r.rule,
            r.status,
            r.ddl,
            r.inserted,
            r.updated,
            r.deleted,
            r.unchanged,
        ), table
    assert (ran["uiSchemas"].inserted, ran["uiSchemas"].updated, ran["uiSchemas"].deleted) == (
        19,
        31,
        20,
    )
    assert (ran["orders"].inserted, ran["orders"].unchanged) == (24, 6)


def test_preview_refuses_while_a_run_holds_the_target(source: str, target: str) -> None:
    from migration_manager.target_lock import DagRunRef, TargetLockedError, hold_run_lock

    sql(source, "CREATE TABLE orders (id bigint PRIMARY KEY); INSERT INTO orders VALUES (1);")
    with (
        hold_run_lock(target, DagRunRef("migration_sync", "nightly-1"), timeout=5),
        pytest.raises(
            TargetLockedError,
            match=r"locked by migration run migration_sync/nightly-1 .*preview again when that run has finished",
        ),
    ):
        preview(source, target, profile="generic", rules={"user": {"default": "overwrite"}})
    assert rows(target, "SELECT to_regclass('public.orders')") == [(None,)]
    # once the run has let go, the same preview goes through
    results = preview(source, target, profile="generic", rules={"user": {"default": "overwrite"}})
    assert [(r.table, r.inserted) for r in results] == [("orders", 1)]
    assert rows(target, "SELECT to_regclass('public.orders')") == [(None,)]
