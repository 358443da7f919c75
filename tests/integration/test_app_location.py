"""A nocobase run whose connection settings select no NocoBase tables is refused, naming where the
application's tables are (issue 19: both connections without DB_SCHEMA etc. once ended green with
a migration of 0 tables)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migration_manager.checks import version_differences
from migration_manager.errors import ConfigError
from tests.pgtools import bare_manifest, make_file, sql

pytestmark = pytest.mark.postgres

# A NocoBase database installed with DB_SCHEMA=app, DB_TABLE_PREFIX=nb_, DB_UNDERSCORED=true
# (the names as NocoBase makes them), plus tables of other things that must not mislead.
APP = """
CREATE SCHEMA app;
CREATE TABLE app.nb_application_plugins (
  id serial PRIMARY KEY, name text UNIQUE, package_name text, version text, enabled boolean
);
CREATE TABLE app.nb_collections (key text PRIMARY KEY, name text, options json);
CREATE TABLE app.nb_migrations (name text PRIMARY KEY);
CREATE TABLE app.nb_application_version (value text);
INSERT INTO app.nb_application_version VALUES ('2.2.15');
CREATE TABLE app.nb_customer_v_i_ps (id bigint PRIMARY KEY);
CREATE TABLE app.nb_ui_schemas ("x-uid" text PRIMARY KEY);
CREATE TABLE public."aiCollections" (id int PRIMARY KEY);
"""


def test_a_source_without_the_settings_is_refused_naming_where_the_app_is(
    source: str, tmp_path: Path
) -> None:
    sql(source, APP)
    path = tmp_path / "m.zip"
    with pytest.raises(ConfigError) as refused:
        make_file(source, path, profile="nocobase")
    message = str(refused.value)
    assert "The source connection selects schema 'public' with no NocoBase tables" in message
    assert (
        "Schema 'app' holds 6 tables named nb_*: set DB_SCHEMA=app, DB_TABLE_PREFIX=nb_, "
        "DB_UNDERSCORED=true in the connection's app_env"
    ) in message
    assert "Nothing was written" in message
    assert path.stat().st_size == 0  # no migration file
    # the prefix alone is not enough either (camelCase names are looked for)
    with pytest.raises(ConfigError, match=re.escape("DB_UNDERSCORED=true")):
        make_file(source, path, profile="nocobase", app_env={"DB_SCHEMA": "app"})
    # with the settings the file is made, customerVIPs under NocoBase's own physical name
    manifest = make_file(
        source,
        path,
        profile="nocobase",
        app_env={"DB_SCHEMA": "app", "DB_TABLE_PREFIX": "nb_", "DB_UNDERSCORED": "true"},
        rules={"user": {"independent": {"customerVIPs": "overwrite"}}},
    )
    tables = {t["name"]: t for t in manifest["tables"]}
    assert tables["nb_customer_v_i_ps"]["rule"] == "overwrite"
    assert manifest["source"]["app_version"] == "2.2.15"


def test_a_database_without_nocobase_says_so(source: str, tmp_path: Path) -> None:
    sql(source, 'CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE "aiCollections" (id int)')
    with pytest.raises(ConfigError, match="holds no NocoBase tables in any schema"):
        make_file(source, tmp_path / "m.zip", profile="nocobase")
    # the generic profile has no such expectation
    assert make_file(source, tmp_path / "g.zip", profile="generic")["tables"]


def test_a_target_without_the_settings_or_versions_is_refused(target: str) -> None:
    sql(target, APP)
    manifest = bare_manifest(app_version="2.2.15")
    with pytest.raises(ConfigError, match="The target connection selects schema 'public'"):
        version_differences(manifest, target, {})
    settings = {"DB_SCHEMA": "app", "DB_TABLE_PREFIX": "nb_", "DB_UNDERSCORED": "true"}
    assert version_differences(manifest, target, settings) == ("2.2.15", "2.2.15", [])
    # neither side's version readable: refused, not "versions match"
    sql(target, "DROP TABLE app.nb_application_version")
    unversioned = bare_manifest(app_version=None)
    with pytest.raises(ConfigError, match="Neither the source nor the target has a readable"):
        version_differences(unversioned, target, settings)
