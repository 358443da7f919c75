"""The nocobase profile's table knowledge, generated from NocoBase's own collection files.

``tests/fixtures/nocobase/packages`` holds verbatim copies of a few real 2.2.15 collection
files (``dist/server/collections/*.js``) with their package's name and version; the generator
evaluates them with node, as it does the whole release.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_manager.nocobase_knowledge import (
    Knowledge,
    available,
    build,
    choose,
    default_through,
    load,
)
from migration_manager.nocobase_packages import extract

PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "nocobase" / "packages" / "@nocobase"


@pytest.fixture(scope="module")
def raw() -> dict:
    return extract(sorted(p for p in PACKAGES.iterdir() if p.is_dir()))


def test_extractor_evaluates_define_and_extend_files(raw: dict) -> None:
    assert raw["errors"] == []
    assert raw["packages"] == {
        "@nocobase/plugin-acl": "2.2.15",
        "@nocobase/plugin-data-source-main": "2.2.15",
        "@nocobase/plugin-ui-layout": "2.2.15",
        "@nocobase/plugin-users": "2.2.15",
        "@nocobase/plugin-workflow": "2.2.15",
    }
    by_file = {(f["package"], f["file"]): f for f in raw["files"]}
    assert len(by_file) == 7  # the common/ workflowTasks file is required, not a collection file
    routes = by_file[("@nocobase/plugin-ui-layout", "dist/server/collections/desktopRoutes.js")]
    assert routes["kind"] == "extend" and routes["name"] == "desktopRoutes"
    assert routes["relations"] == [
        {
            "name": "uiLayouts",
            "type": "belongsToMany",
            "target": "uiLayouts",
            "through": "desktopRoutesUiLayouts",
            "foreignKey": "desktopRouteId",
            "otherKey": "uiLayoutUid",
            "sourceKey": "id",
            "targetKey": "uid",
        }
    ]
    layouts = by_file[("@nocobase/plugin-ui-layout", "dist/server/collections/uiLayouts.js")]
    assert layouts["kind"] == "define"
    assert layouts["migrationRules"] == ["overwrite", "schema-only"]
    assert layouts["dumpRules"] == "required"
    categories = by_file[
        ("@nocobase/plugin-data-source-main", "dist/server/collections/collectionCategories.js")
    ]
    assert categories["dumpRules"] == {"group": "required"}
    # plugin-workflow's file re-exports a function from ../../common that returns the definition
    tasks = by_file[("@nocobase/plugin-workflow", "dist/server/collections/workflowTasks.js")]
    assert (tasks["kind"], tasks["name"], tasks["migrationRules"]) == (
        "define",
        "workflowTasks",
        ["overwrite", "schema-only"],
    )


def test_build_merges_extensions_and_collects_through_tables(raw: dict) -> None:
    k = build(raw, "2.2.15", "test")
    users = k.collections["users"]
    assert users.defined_by == "@nocobase/plugin-users"
    assert users.extended_by == ("@nocobase/plugin-acl",)
    # the definition's rules win over an extension's
    assert users.migration_rules == ("schema-only", "overwrite")
    routes = k.collections["desktopRoutes"]
    assert routes.defined_by is None and routes.extended_by == ("@nocobase/plugin-ui-layout",)
    assert set(k.through) == {"desktopRoutesUiLayouts", "collectionCategory", "rolesUsers"}
    assert k.through["desktopRoutesUiLayouts"].sides == ("desktopRoutes", "uiLayouts")
    assert k.through["desktopRoutesUiLayouts"].keys == ("desktopRouteId", "uiLayoutUid")
    assert k.through["collectionCategory"].sides == ("collectionCategories", "collections")
    assert len(k.through["collectionCategory"].declared_by) == 2  # declared from both sides
    assert k.through["rolesUsers"].sides == ("roles", "users")
    again = Knowledge.model_validate_json(k.file_text())
    assert again.collections == k.collections and again.through == k.through


def test_default_through_name_is_sequelizes() -> None:
    assert default_through("roles", "users") == "rolesUsers"
    assert default_through("users", "roles") == "rolesUsers"
    assert default_through("workflows", "workflowCategories") == "workflowcategoriesWorkflows"


def test_committed_knowledge_for_2_2() -> None:
    assert "2.2" in available()
    k = load("2.2")
    assert k.version == "2.2.15" and k.source == "npm registry"
    assert all(v == "2.2.15" for v in k.packages.values()) and len(k.packages) >= 40
    with_rules = [c for c in k.collections.values() if c.migration_rules]
    assert len(with_rules) >= 86
    assert k.through["desktopRoutesUiLayouts"].sides == ("desktopRoutes", "uiLayouts")
    assert k.through["collectionCategory"].sides == ("collectionCategories", "collections")
    assert k.collections["applicationPlugins"].defined_by == "@nocobase/server"
    assert k.skipped == ()


def test_committed_knowledge_records_relations_and_unique_names() -> None:
    k = load("2.2")
    refs = {(r.collection, r.column): r for r in k.references}
    storage = refs[("attachments", "storageId")]
    assert (storage.target, storage.target_key) == ("storages", "")  # "": storages' key
    assert storage.declared_by == "@nocobase/plugin-file-manager: attachments.storage"
    assert refs[("systemSettings", "logoId")].target == "attachments"  # the system logo
    # a hasMany declares the key on its target's side
    assert refs[("userDataSyncTasks", "sourceId")].target == "userDataSyncSources"
    assert "name" in k.collections["storages"].unique
    assert len(k.references) >= 80


def test_choose_takes_the_nearest_lower_minor() -> None:
    exact = choose("2.2.15")
    assert exact.knowledge is not None and exact.knowledge.minor == "2.2" and exact.warning is None
    assert choose("2.2.3").warning is None  # same minor
    newer = choose("2.3.1")
    assert newer.knowledge is not None and newer.knowledge.minor == "2.2"
    assert newer.warning and "2.3.1" in newer.warning and "nearest lower" in newer.warning
    assert newer.recorded().exact is False
    older = choose("1.9.0")
    assert older.knowledge is not None and older.warning and "older" in older.warning
    unknown = choose(None)
    assert (
        unknown.knowledge is not None
        and unknown.warning
        and "applicationVersion" in unknown.warning
    )
