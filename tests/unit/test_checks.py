"""Environment settings comparison and NocoBase's secret format, without a database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migration_manager import checks
from migration_manager.errors import ConfigError, EnvironmentMismatchError
from migration_manager.manifest import Manifest, Variable
from migration_manager.nocobase_secrets import aes_key, nocobase_decrypt, nocobase_encrypt
from migration_manager.profiles import get_profile
from tests.pgtools import bare_manifest

SETTINGS = (
    "DB_UNDERSCORED",
    "USE_DB_SCHEMA_IN_SUBAPP",
    "DB_TABLE_PREFIX",
    "DB_SCHEMA",
    "COLLECTION_MANAGER_SCHEMA",
)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nocobase"


def _manifest(env: dict[str, str]) -> Manifest:
    """A manifest of no tables from a NocoBase source configured by ``env``."""
    return bare_manifest(app_settings=get_profile("nocobase").settings(env))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_UNDERSCORED", "true"),
        ("USE_DB_SCHEMA_IN_SUBAPP", "true"),
        ("DB_TABLE_PREFIX", "nb_"),
        ("DB_SCHEMA", "nocobase"),
        ("COLLECTION_MANAGER_SCHEMA", "collections"),
    ],
)
def test_each_setting_difference_stops(name: str, value: str) -> None:
    with pytest.raises(
        EnvironmentMismatchError, match=rf"{name}: source .*, target '{value}'"
    ) as err:
        checks.check_settings(_manifest({}), {name: value})
    assert "cannot continue" in str(err.value)


def test_unset_equals_default() -> None:
    explicit = {
        "DB_UNDERSCORED": "false",
        "DB_TABLE_PREFIX": "",
        "DB_SCHEMA": "public",
        "USE_DB_SCHEMA_IN_SUBAPP": "0",
    }
    assert checks.setting_differences(_manifest({}), explicit) == []
    assert checks.setting_differences(_manifest(explicit), {}) == []
    # the collection manager schema defaults to DB_SCHEMA
    assert (
        checks.setting_differences(
            _manifest({"DB_SCHEMA": "app"}),
            {"DB_SCHEMA": "app", "COLLECTION_MANAGER_SCHEMA": "app"},
        )
        == []
    )


def test_all_differences_listed() -> None:
    diffs = checks.setting_differences(_manifest({}), {"DB_UNDERSCORED": "1", "DB_SCHEMA": "x"})
    assert {d.name for d in diffs} == {"DB_UNDERSCORED", "DB_SCHEMA", "COLLECTION_MANAGER_SCHEMA"}


def test_secret_round_trip_with_fixture_key() -> None:
    key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes()
    stored = nocobase_encrypt("fx-prod-secret ✓", key)
    assert len(stored) > 64 and all(c in "0123456789abcdef" for c in stored)
    assert nocobase_decrypt(stored, key) == "fx-prod-secret ✓"
    assert stored != nocobase_encrypt("fx-prod-secret ✓", key)  # random IV


def test_staging_secret_decrypts_only_with_staging_key() -> None:
    """The fixture's HELPDESK_KEY ciphertext, read the way NocoBase reads it."""
    stored = "1dbac096fd36269099ccde69f80e22746231d34b3d395c8dc9d3990464dc9b587eea6b00b398700f315e24d217a373b6"
    assert (
        nocobase_decrypt(stored, (FIXTURES / "dev_staging_aes_key.dat").read_bytes())
        == "fx-staging-helpdesk-key"
    )
    with pytest.raises(ValueError):
        nocobase_decrypt(stored, (FIXTURES / "dev_prod_aes_key.dat").read_bytes())


def test_aes_key_sources(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert aes_key({"APP_AES_SECRET_KEY": key.hex()}) == key
    path = tmp_path / "aes_key.dat"
    path.write_bytes(key)
    assert aes_key({"APP_AES_SECRET_KEY_PATH": str(path)}) == key
    with pytest.raises(ConfigError, match="APP_AES_SECRET_KEY"):
        aes_key({})
    with pytest.raises(ConfigError, match="32 bytes"):
        aes_key({"APP_AES_SECRET_KEY": "abcd"})
    with pytest.raises(ConfigError, match="not hex"):
        aes_key({"APP_AES_SECRET_KEY": "zz"})


def test_resolve_values_splits_missing() -> None:
    missing = [Variable(name="A", type="default"), Variable(name="B", type="secret")]
    values, still = checks.resolve_values(missing, {"A": "x", "B": ""})
    assert values == {"A": "x"}
    assert [v.name for v in still] == ["B"]


def test_references_resolve_through_the_lookup_and_literal_secrets_are_named() -> None:
    missing = [
        Variable(name="TOKEN", type="secret"),
        Variable(name="URL", type="default"),
        Variable(name="PASS", type="secret"),
    ]
    asked: list[checks.ValueRef] = []

    def lookup(ref: checks.ValueRef) -> str | None:
        asked.append(ref)
        return {"variable": "tok-123", "connection": "pw-456"}[ref.kind]

    supplied = {
        "TOKEN": {"variable": "crm_api_token"},
        "URL": "https://x",
        "PASS": {"connection": "crm"},
    }
    values, still = checks.resolve_values(missing, supplied, lookup)
    assert values == {"TOKEN": "tok-123", "URL": "https://x", "PASS": "pw-456"}
    assert still == []
    assert asked == [
        checks.ValueRef("variable", "crm_api_token"),
        checks.ValueRef("connection", "crm"),
    ]
    parsed = checks.parse_supplied(
        {"TOKEN": "literal", "URL": "https://x", "PASS": {"connection": "c"}}
    )
    assert checks.literal_secrets(missing, parsed) == ["TOKEN"]


@pytest.mark.parametrize(
    "entry",
    [
        {"varible": "x"},
        {"variable": ""},
        {"variable": "a", "connection": "b"},
        {"variable": 3},
        ["x"],
    ],
)
def test_a_malformed_reference_is_refused_naming_the_variable(entry: object) -> None:
    with pytest.raises(ConfigError, match=r"env_values\['TOKEN'\]"):
        checks.parse_supplied({"TOKEN": entry})


def test_a_reference_that_resolves_to_nothing_is_refused() -> None:
    missing = [Variable(name="TOKEN", type="secret")]
    with pytest.raises(ConfigError, match="the variable 'gone' does not exist or is empty"):
        checks.resolve_values(missing, {"TOKEN": {"variable": "gone"}}, lambda ref: None)
