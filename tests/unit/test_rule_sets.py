"""Rule set names and documents."""

from __future__ import annotations

import pytest

from migration_manager.errors import ConfigError
from migration_manager.rule_sets import NamedRuleSet, check_name


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "a\\b", "..", ".hidden", "", "x" * 65, "a b", "a..b", "ünï"]
)
def test_names_with_path_characters_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        check_name(name)


@pytest.mark.parametrize("name", ["nightly", "staging-to-prod", "v1.2_rules", "A"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


def test_yaml_round_trip() -> None:
    doc = {
        "name": "nightly",
        "profile": "nocobase",
        "source_conn_id": "staging",
        "rules": {"user": {"default": "schema-only", "independent": {"orders": "upsert"}}},
    }
    rs = NamedRuleSet.parse(doc)
    again = NamedRuleSet.from_yaml(rs.to_yaml())
    assert again == rs
    assert again.rules.user.independent == {"orders": "upsert"}
    assert again.rules.system.default == "profile"


def test_bad_rules_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"rule set x\.rules\.user\.default: unknown rule 'copy'"):
        NamedRuleSet.parse({"name": "x", "rules": {"user": {"default": "copy"}}})
    with pytest.raises(ConfigError, match="unknown key"):
        NamedRuleSet.parse({"name": "x", "rulez": {}})
