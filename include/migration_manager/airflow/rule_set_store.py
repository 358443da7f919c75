"""Rule sets in the migration store (``rule_sets/<name>.yaml``); reading them is the engine's
(:mod:`migration_manager.rule_sets`), this module gives it the store's folder."""

from __future__ import annotations

from airflow.sdk import ObjectStoragePath

from migration_manager.airflow.store import store_root
from migration_manager.rule_sets import FOLDER, NamedRuleSet, read_rule_set, rule_set_file
from migration_manager.rule_sets import list_rule_sets as _list

__all__ = ["FOLDER", "delete_rule_set", "list_rule_sets", "load_rule_set", "save_rule_set"]


def _folder() -> ObjectStoragePath:
    return store_root() / FOLDER


def list_rule_sets() -> tuple[list[NamedRuleSet], list[str]]:
    """Every readable rule set of the store, and a message for each unreadable file."""
    return _list(_folder())


def load_rule_set(name: str) -> NamedRuleSet:
    return read_rule_set(_folder(), name)


def save_rule_set(rule_set: NamedRuleSet) -> ObjectStoragePath:
    path: ObjectStoragePath = rule_set_file(_folder(), rule_set.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rule_set.to_yaml())
    return path


def delete_rule_set(name: str) -> bool:
    path = rule_set_file(_folder(), name)
    if not path.exists():
        return False
    path.unlink()
    return True
