"""Rules documents, .env files and connection extras: validated up front, errors name the key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from migration_manager.config import (
    PROFILE_DEFAULT,
    RULES,
    MigrationRules,
    SystemRules,
    UserRules,
    app_env_from_extra,
    parse_env_file,
)
from migration_manager.errors import ConfigError, MigrationError

# --------------------------------------------------------------------------- MigrationRules.parse


@pytest.mark.parametrize("doc", [None, "", {}, {"system": None, "user": None}])
def test_empty_document_gives_the_defaults(doc: Any) -> None:
    rules = MigrationRules.parse(doc)
    assert rules == MigrationRules()
    assert rules.system == SystemRules(default=PROFILE_DEFAULT, independent={})
    assert rules.user == UserRules(default="schema-only", independent={})


def test_full_document() -> None:
    rules = MigrationRules.parse(
        {
            "system": {"default": "overwrite", "independent": {"uiSchemas": "upsert"}},
            "user": {"default": "skip", "independent": {"orders": "overwrite", "logs": "skip"}},
        }
    )
    assert rules.system == SystemRules(default="overwrite", independent={"uiSchemas": "upsert"})
    assert rules.user == UserRules(
        default="skip", independent={"orders": "overwrite", "logs": "skip"}
    )
    assert rules.group("system") is rules.system and rules.group("user") is rules.user


def test_json_text_is_accepted() -> None:
    text = json.dumps({"user": {"default": "upsert"}})
    assert MigrationRules.parse(text).user.default == "upsert"


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_name_is_accepted(rule: str) -> None:
    rules = MigrationRules.parse(
        {"system": {"default": rule}, "user": {"default": rule, "independent": {"t": rule}}}
    )
    assert (rules.system.default, rules.user.default, rules.user.independent["t"]) == (
        rule,
        rule,
        rule,
    )


def test_profile_is_a_system_default_only() -> None:
    assert MigrationRules.parse({"system": {"default": "profile"}}).system.default == "profile"
    with pytest.raises(ConfigError, match=re.escape("rules.user.default: unknown rule 'profile'")):
        MigrationRules.parse({"user": {"default": "profile"}})
    with pytest.raises(
        ConfigError, match=re.escape("rules.system.independent['roles']: unknown rule 'profile'")
    ):
        MigrationRules.parse({"system": {"independent": {"roles": "profile"}}})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"user": {"default": "replace"}},
            "rules.user.default: unknown rule 'replace'; use one of schema-only, overwrite, "
            "upsert, insert-ignore, skip",
        ),
        (
            {"system": {"default": "merge"}},
            "rules.system.default: unknown rule 'merge'; use one of schema-only, overwrite, "
            "upsert, insert-ignore, skip, profile",
        ),
        (
            {"user": {"independent": {"orders": "Overwrite"}}},
            "rules.user.independent['orders']: unknown rule 'Overwrite'",
        ),
        (
            {"system": {"independent": {"uiSchemas": None}}},
            "rules.system.independent['uiSchemas']: unknown rule None",
        ),
        ({"user": {"default": 1}}, "rules.user.default: unknown rule 1"),
        ({"users": {}}, "rules: unknown key(s) 'users'; allowed: 'system', 'user'"),
        ({"user": {}, "other": {}, "more": {}}, "rules: unknown key(s) 'more', 'other'"),
        (
            {"user": {"default": "skip", "tables": {}}},
            "rules.user: unknown key(s) 'tables'; allowed: 'default', 'independent'",
        ),
        ({"user": "overwrite"}, "rules.user: expected an object with 'default' and 'independent'"),
        (
            {"user": {"independent": ["orders"]}},
            "rules.user.independent: expected an object of table name -> rule",
        ),
        (["overwrite"], "rules: expected an object with keys 'system' and/or 'user', got list"),
        ("overwrite", "rules: not valid JSON"),
        ('{"user": ', "rules: not valid JSON"),
    ],
)
def test_bad_document_names_the_key(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        MigrationRules.parse(doc)


def test_source_names_the_document_in_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("params.rules.user.default: unknown rule")):
        MigrationRules.parse({"user": {"default": "nope"}}, source="params.rules")


def test_config_error_is_terminal() -> None:
    with pytest.raises(ConfigError) as info:
        MigrationRules.parse({"user": {"default": "nope"}})
    assert isinstance(info.value, MigrationError) and info.value.terminal


def test_to_dict_round_trips() -> None:
    doc = {
        "system": {"default": "profile", "independent": {"uiSchemas": "upsert"}},
        "user": {"default": "overwrite", "independent": {}},
    }
    rules = MigrationRules.parse(doc)
    assert rules.model_dump() == doc
    assert MigrationRules.parse(rules.model_dump()) == rules
    assert MigrationRules.parse(json.dumps(rules.model_dump())) == rules


def test_table_names_become_strings() -> None:
    assert MigrationRules.parse({"user": {"independent": {1: "skip"}}}).user.independent == {
        "1": "skip"
    }


# --------------------------------------------------------------------------- MigrationRules.load


def test_load_yaml(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "system:\n  default: profile\n  independent:\n    uiSchemas: upsert\n"
        "user:\n  default: overwrite\n",
        encoding="utf-8",
    )
    rules = MigrationRules.load(path)
    assert rules.system == SystemRules(default="profile", independent={"uiSchemas": "upsert"})
    assert rules.user.default == "overwrite"


def test_load_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("user:\n  default: overwrit\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}.user.default: unknown rule 'overwrit'")
    ):
        MigrationRules.load(path)


def test_load_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Rules file .*nope.yaml does not exist"):
        MigrationRules.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="Rules file .*bad.yaml is not valid YAML"):
        MigrationRules.load(bad)


def test_load_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert MigrationRules.load(path) == MigrationRules()


# --------------------------------------------------------------------------- .env files


def test_parse_env_file() -> None:
    text = """
# NocoBase .env
APP_ENV=production
export DB_SCHEMA=app
DB_UNDERSCORED = true
DB_TABLE_PREFIX="nb_"
COLLECTION_MANAGER_SCHEMA='cm'
APP_KEY=abc=def
WITH_COMMENT=value # a comment
QUOTED_HASH="a # b"
EMPTY=
  INDENTED=1
not a setting line
9BAD=1
"""
    assert parse_env_file(text) == {
        "APP_ENV": "production",
        "DB_SCHEMA": "app",
        "DB_UNDERSCORED": "true",
        "DB_TABLE_PREFIX": "nb_",
        "COLLECTION_MANAGER_SCHEMA": "cm",
        "APP_KEY": "abc=def",
        "WITH_COMMENT": "value",
        "QUOTED_HASH": "a # b",
        "EMPTY": "",
        "INDENTED": "1",
    }


def test_parse_env_file_later_lines_win() -> None:
    assert parse_env_file("A=1\nA=2\n") == {"A": "2"}


def test_parse_env_file_empty() -> None:
    assert parse_env_file("") == {}
    assert parse_env_file("# only comments\n\n") == {}


# --------------------------------------------------------------------------- connection extras


def test_app_env_from_extra_object_and_json_text() -> None:
    extra = {"app_env": {"DB_SCHEMA": "app", "DB_UNDERSCORED": True, "DB_TABLE_PREFIX": None}}
    assert app_env_from_extra(extra) == {
        "DB_SCHEMA": "app",
        "DB_UNDERSCORED": "True",
        "DB_TABLE_PREFIX": "",
    }
    assert app_env_from_extra({"app_env": json.dumps({"DB_SCHEMA": "x"})}) == {"DB_SCHEMA": "x"}


@pytest.mark.parametrize("extra", [None, {}, {"app_env": ""}, {"app_env": "   "}, {"app_env": {}}])
def test_app_env_from_extra_without_settings(extra: Any) -> None:
    assert app_env_from_extra(extra) == {}


def test_app_env_file_and_app_env_merge_app_env_wins(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DB_SCHEMA=from_file\nDB_TABLE_PREFIX=nb_\n", encoding="utf-8")
    extra = {"app_env_file": str(env), "app_env": {"DB_SCHEMA": "from_extra"}}
    assert app_env_from_extra(extra) == {"DB_SCHEMA": "from_extra", "DB_TABLE_PREFIX": "nb_"}


def test_app_env_file_unreadable_names_the_connection(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(f"nocobase_prod: app_env_file {tmp_path / 'missing.env'} cannot be read")
        + ".*fix the path in the connection's extra",
    ):
        app_env_from_extra({"app_env_file": str(tmp_path / "missing.env")}, conn_id="nocobase_prod")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "staging: extra 'app_env' is not a JSON object"),
        ('["DB_SCHEMA"]', "staging: extra 'app_env' must be an object of NAME -> value"),
        (["DB_SCHEMA"], "staging: extra 'app_env' must be an object of NAME -> value"),
        ("42", "staging: extra 'app_env' must be an object of NAME -> value"),
    ],
)
def test_app_env_bad_values_name_the_connection(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        app_env_from_extra({"app_env": raw}, conn_id="staging")
