"""Named rule sets: a saved migration configuration (profile, source, rules) as YAML.

Stored in the migration store as ``rule_sets/<name>.yaml``; DAG params and sync pipelines
accept ``rule_set: <name>`` wherever they accept ``rules``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from migration_manager.config import RuleSet
from migration_manager.errors import ConfigError
from migration_manager.profiles import get_profile

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    """A rule set name: letters, digits, ``_ . -``, at most 64, no path characters."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"Rule set name {name!r} is not allowed: use 1-64 letters, digits, '_', '.', '-' "
            "(no '/', '\\\\' or '..'), starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class NamedRuleSet:
    name: str
    profile: str
    source_conn_id: str
    rules: RuleSet
    description: str = ""

    def to_yaml(self) -> str:
        doc = {
            "name": self.name,
            "description": self.description,
            "profile": self.profile,
            "source_conn_id": self.source_conn_id,
            "rules": self.rules.to_dict(),
        }
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    @classmethod
    def parse(cls, doc: Any, *, name: str | None = None) -> NamedRuleSet:
        if not isinstance(doc, Mapping):
            raise ConfigError(
                f"Rule set {name or '?'}: expected a mapping with name, profile, source_conn_id, rules"
            )
        unknown = sorted(set(doc) - {"name", "description", "profile", "source_conn_id", "rules"})
        if unknown:
            raise ConfigError(
                f"Rule set {name or doc.get('name')!r}: unknown key(s) {', '.join(unknown)}"
            )
        rs_name = check_name(str(doc.get("name") or name or ""))
        profile = get_profile(doc.get("profile") or "nocobase").name
        return cls(
            name=rs_name,
            profile=profile,
            source_conn_id=str(doc.get("source_conn_id") or "migration_source"),
            rules=RuleSet.parse(doc.get("rules"), source=f"rule set {rs_name}.rules"),
            description=str(doc.get("description") or ""),
        )

    @classmethod
    def from_yaml(cls, text: str, *, name: str | None = None) -> NamedRuleSet:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Rule set {name or '?'} is not valid YAML: {exc}") from exc
        return cls.parse(doc, name=name)
