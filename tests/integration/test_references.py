"""References across rule boundaries on the real NocoBase fixture pair (issue 19 item 1).

``storages`` is overwritten (NocoBase's default) and ``attachments`` is schema-only: prod keeps its
attachment rows, the system logo among them. Each install draws its own snowflake id for the
``local`` storage, so replacing prod's storage row by staging's left every prod file without its
storage (HTTP 500 in the app). Storages are matched by their unique ``name``: prod's row keeps its
id and takes staging's values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_manager.archive import open_archive
from migration_manager.destructive import assess
from migration_manager.execute import prepare
from migration_manager.step_outcomes import Difference
from tests.pgtools import apply_file, make_file, rows, scalar, sql

pytestmark = pytest.mark.postgres

STORAGE = "attachments.storageId -> storages.id"


def _pending(manifest: dict) -> list[Difference]:
    """The tables the plan has work for: the overwritten ones (schema-only tables whose
    structure is equal, such as attachments, are not among them)."""
    return [
        Difference(table=t["name"], rule=t["rule"])
        for t in manifest["tables"]
        if t["rule"] == "overwrite"
    ]


def test_prod_attachments_keep_their_storage(
    nocobase_pair: tuple[str, str], tmp_path: Path
) -> None:
    staging, prod = nocobase_pair
    sql(staging, "UPDATE storages SET title = 'Local (staging)', path = 'staged'")
    prod_storage = scalar(prod, "SELECT id FROM storages WHERE name = 'local'")
    assert prod_storage != scalar(staging, "SELECT id FROM storages WHERE name = 'local'")
    path = tmp_path / "m.zip"
    manifest = make_file(staging, path, profile="nocobase")
    tables = {t["name"]: t for t in manifest["tables"]}
    assert (tables["storages"]["rule"], tables["attachments"]["rule"]) == (
        "overwrite",
        "schema-only",
    )
    assert tables["storages"]["natural_key"] == ["name"]
    arrows = {
        f"{r['table']}.{r['column']} -> {r['target']}.{r['target_column']}": r
        for r in manifest["references"]
    }
    assert arrows[STORAGE]["declared_by"] == "@nocobase/plugin-file-manager: attachments.storage"
    assert "systemSettings.logoId -> attachments.id" in arrows

    with open_archive(path) as reader:
        plan = assess(reader, prod, _pending(manifest))
    assert plan.dangling == () and not [x for x in plan.losses if x.table == "storages"]

    apply_file(path, prod)
    # prod's storage row kept its id and took staging's values; its files still find it
    assert rows(prod, "SELECT id, title, path FROM storages") == [
        (prod_storage, "Local (staging)", "staged")
    ]
    assert rows(prod, 'SELECT "storageId" FROM attachments') == [(prod_storage,)]
    # and a second run finds nothing to do there (rows compared without the ids, by name)
    again = make_file(staging, tmp_path / "again.zip", profile="nocobase")
    assert again["references"] == manifest["references"]
    with open_archive(tmp_path / "again.zip") as reader:
        second = prepare(reader, prod)
    assert "storages" not in {t for u in second.units for t in u.tables}
    assert {t.table: t.status for t in second.tables}["storages"] == "unchanged"


def test_references_the_tool_cannot_keep_are_destructive_per_relation(
    nocobase_pair: tuple[str, str], tmp_path: Path
) -> None:
    staging, prod = nocobase_pair
    # prod's storage is one staging does not have (another name): overwrite removes it
    sql(prod, "UPDATE storages SET name = 'prod-only'")
    sql(
        prod,
        'INSERT INTO attachments (id, "storageId", filename, "createdAt", "updatedAt") '
        "SELECT g, (SELECT id FROM storages), 'f' || g, now(), now() FROM generate_series(2, 17) g",
    )
    path = tmp_path / "m.zip"
    manifest = make_file(staging, path, profile="nocobase")
    with open_archive(path) as reader:
        plan = assess(reader, prod, _pending(manifest))
    assert plan.destructive
    [dangling] = [d for d in plan.dangling if d.reference.target == "storages"]
    assert dangling.rows == 17
    assert dangling.describe() == (
        "17 prod rows of attachments refer to storages rows this migration removes "
        f"({STORAGE}; @nocobase/plugin-file-manager: attachments.storage)"
    )
    assert dangling.describe() in plan.parts
    assert json.loads(plan.model_dump_json())["dangling"][0]["rows"] == 17


def test_a_real_foreign_key_into_an_overwritten_table_is_counted(
    source: str, target: str, tmp_path: Path
) -> None:
    schema = (
        "CREATE TABLE parent (id int PRIMARY KEY, name text);"
        "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));"
    )
    sql(source, schema + "INSERT INTO parent VALUES (1, 'kept');")
    sql(target, schema)
    sql(target, "INSERT INTO parent VALUES (1, 'kept'), (2, 'gone'), (3, 'unused');")
    sql(target, "INSERT INTO child SELECT g, 1 + g % 2 FROM generate_series(1, 6) g")
    path = tmp_path / "m.zip"
    rules = {"user": {"default": "schema-only", "independent": {"parent": "overwrite"}}}
    manifest = make_file(source, path, rules=rules)
    [ref] = manifest["references"]
    assert ref["declared_by"].startswith("foreign key ")
    with open_archive(path) as reader:
        plan = assess(reader, target, [Difference(table="parent", rule="overwrite")])
    [dangling] = plan.dangling
    assert dangling.rows == 3  # the child rows of parent 2; none point at 3
    assert dangling.describe().startswith(
        "3 prod rows of child refer to parent rows this migration removes "
        "(child.parent_id -> parent.id; foreign key "
    )
