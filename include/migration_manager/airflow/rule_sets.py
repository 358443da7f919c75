"""Rule sets in the migration store (``rule_sets/<name>.yaml``)."""

from __future__ import annotations

from airflow.sdk import ObjectStoragePath

from migration_manager.airflow.store import store_root
from migration_manager.errors import ConfigError
from migration_manager.rulesets import NamedRuleSet, check_name

FOLDER = "rule_sets"


def _path(name: str) -> ObjectStoragePath:
    return store_root() / FOLDER / f"{check_name(name)}.yaml"


def list_rule_sets() -> list[NamedRuleSet]:
    folder = store_root() / FOLDER
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".yaml"):
            out.append(NamedRuleSet.from_yaml(path.read_text(), name=path.name[: -len(".yaml")]))
    return out


def load_rule_set(name: str) -> NamedRuleSet:
    path = _path(name)
    if not path.exists():
        known = ", ".join(r.name for r in list_rule_sets()) or "none saved yet"
        raise ConfigError(
            f"Rule set {name!r} does not exist in the migration store (known: {known})"
        )
    return NamedRuleSet.from_yaml(path.read_text(), name=name)


def save_rule_set(rule_set: NamedRuleSet) -> ObjectStoragePath:
    path = _path(rule_set.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rule_set.to_yaml())
    return path


def delete_rule_set(name: str) -> bool:
    path = _path(name)
    if not path.exists():
        return False
    path.unlink()
    return True
