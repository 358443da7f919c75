"""The nocobase profile on the real fixture pair: code-declared tables are known, and the
through tables that decide whether the app shows the new pages (desktopRoutesUiLayouts) and
the collections' categories (collectionCategory) follow their two sides."""

from __future__ import annotations

from pathlib import Path

from migration_manager import pg
from migration_manager.config import MigrationRules
from migration_manager.plan import resolve
from migration_manager.profiles import get_profile
from migration_manager.schema import list_tables, reflect_tables
from tests.pgtools import make_file, migrate, nocobase_databases, scalar, sql


def _plan(dsn: str, rules: dict | None = None) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    prof = get_profile("nocobase")
    scope = prof.scope({})
    engine = pg.sa_engine(dsn)
    try:
        with engine.connect() as conn:
            tables = list_tables(conn, scope.schema)
            classes = prof.classify(conn, scope, tables)
            plans, _warnings = resolve(
                reflect_tables(conn, scope.schema, tables),
                classes,
                MigrationRules.parse(rules),
                scope,
            )
    finally:
        engine.dispose()
    return {p.name: (p.rule, p.group, p.companion_of) for p in plans}


def test_fixture_pair_sync_knows_every_table_and_links_pages(tmp_path: Path) -> None:
    with nocobase_databases() as dbs:
        for side in ("staging", "prod"):
            manifest = make_file(dbs[side], tmp_path / f"{side}.zip", profile="nocobase")
            unknown = [w for w in manifest["warnings"] if "not a known" in w]
            assert unknown == [], unknown  # 14 on each side before the code knowledge
            assert manifest["profile_knowledge"] == {
                "app_version": "2.2.15",
                "knowledge_version": "2.2.15",
                "knowledge_minor": "2.2",
                "exact": True,
                "warning": None,
            }
        plan = _plan(dbs["staging"])
        assert plan["desktopRoutesUiLayouts"] == (
            "overwrite",
            "system",
            ("desktopRoutes", "uiLayouts"),
        )
        assert plan["collectionCategory"] == (
            "overwrite",
            "system",
            ("collectionCategories", "collections"),
        )
        assert plan["rolesUsers"] == ("schema-only", "system", ("roles", "users"))
        assert plan["uiLayouts"][0] == "overwrite"
        # the weaker side wins: uiLayouts kept schema-only keeps its through table schema-only
        weaker = _plan(dbs["staging"], {"system": {"independent": {"uiLayouts": "schema-only"}}})
        assert weaker["desktopRoutesUiLayouts"][0] == "schema-only"
        assert weaker["collectionCategory"][0] == "overwrite"

        before = {
            t: scalar(dbs["prod"], f'SELECT count(*) FROM "{t}"')
            for t in ("desktopRoutesUiLayouts", "collectionCategory")
        }
        assert before == {"desktopRoutesUiLayouts": 0, "collectionCategory": 0}
        migrate(dbs["staging"], dbs["prod"], tmp_path / "sync.zip", create={"profile": "nocobase"})
        for t, n in (("desktopRoutesUiLayouts", 2), ("collectionCategory", 4)):
            assert scalar(dbs["prod"], f'SELECT count(*) FROM "{t}"') == n, t
        # every visible staging route is linked to the admin layout in prod too
        assert (
            scalar(
                dbs["prod"],
                'SELECT count(*) FROM "desktopRoutes" r WHERE NOT EXISTS (SELECT 1 FROM '
                '"desktopRoutesUiLayouts" l WHERE l."desktopRouteId" = r.id)',
            )
            == 0
        )


def test_a_newer_minor_uses_the_nearest_knowledge_with_a_warning(tmp_path: Path) -> None:
    with nocobase_databases() as dbs:
        sql(dbs["staging"], "UPDATE \"applicationVersion\" SET value = '2.3.4'")
        manifest = make_file(dbs["staging"], tmp_path / "m.zip", profile="nocobase")
        knowledge = manifest["profile_knowledge"]
        assert (knowledge["app_version"], knowledge["knowledge_version"], knowledge["exact"]) == (
            "2.3.4",
            "2.2.15",
            False,
        )
        assert manifest["warnings"][0] == knowledge["warning"]
        assert "NocoBase 2.3.4 has no table knowledge of its own" in knowledge["warning"]
