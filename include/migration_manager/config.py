"""Rules documents and application settings, validated up front with errors that name the key."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migration_manager.errors import ConfigError

SCHEMA_ONLY = "schema-only"
OVERWRITE = "overwrite"
UPSERT = "upsert"
INSERT_IGNORE = "insert-ignore"
SKIP = "skip"
RULES = (SCHEMA_ONLY, OVERWRITE, UPSERT, INSERT_IGNORE, SKIP)
PROFILE_DEFAULT = "profile"
KEYED_RULES = (UPSERT, INSERT_IGNORE)
DATA_RULES = (OVERWRITE, UPSERT, INSERT_IGNORE)

SYSTEM = "system"
USER = "user"
GROUPS = (SYSTEM, USER)


def _check_rule(value: Any, where: str, *, allow_profile: bool = False) -> str:
    allowed = RULES + ((PROFILE_DEFAULT,) if allow_profile else ())
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{where}: unknown rule {value!r}; use one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class GroupRules:
    default: str
    independent: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleSet:
    """A default rule per group plus independent rules for chosen tables.

    Shape (JSON param or YAML file)::

        {"system": {"default": "profile", "independent": {"uiSchemas": "upsert"}},
         "user":   {"default": "schema-only", "independent": {"orders": "overwrite"}}}
    """

    system: GroupRules = field(default_factory=lambda: GroupRules(PROFILE_DEFAULT))
    user: GroupRules = field(default_factory=lambda: GroupRules(SCHEMA_ONLY))

    @classmethod
    def parse(cls, doc: Any, *, source: str = "rules") -> RuleSet:
        if doc is None or doc == "":
            return cls()
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f'{source}: not valid JSON ({exc}); give an object like {{"user": {{"default": "schema-only"}}}}'
                ) from exc
        if not isinstance(doc, Mapping):
            raise ConfigError(
                f"{source}: expected an object with keys 'system' and/or 'user', got {type(doc).__name__}"
            )
        unknown = sorted(set(doc) - set(GROUPS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: 'system', 'user'"
            )
        groups: dict[str, GroupRules] = {}
        for group in GROUPS:
            part = doc.get(group) or {}
            where = f"{source}.{group}"
            if not isinstance(part, Mapping):
                raise ConfigError(f"{where}: expected an object with 'default' and 'independent'")
            bad = sorted(set(part) - {"default", "independent"})
            if bad:
                raise ConfigError(
                    f"{where}: unknown key(s) {', '.join(map(repr, bad))}; allowed: 'default', 'independent'"
                )
            fallback = PROFILE_DEFAULT if group == SYSTEM else SCHEMA_ONLY
            default = _check_rule(
                part.get("default", fallback), f"{where}.default", allow_profile=group == SYSTEM
            )
            independent = part.get("independent") or {}
            if not isinstance(independent, Mapping):
                raise ConfigError(f"{where}.independent: expected an object of table name -> rule")
            checked = {
                str(table): _check_rule(rule, f"{where}.independent[{table!r}]")
                for table, rule in independent.items()
            }
            groups[group] = GroupRules(default, checked)
        return cls(system=groups[SYSTEM], user=groups[USER])

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"Rules file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"Rules file {path} is not valid YAML: {exc}") from exc
        return cls.parse(doc, source=str(path))

    def group(self, name: str) -> GroupRules:
        return self.system if name == SYSTEM else self.user

    def to_dict(self) -> dict[str, Any]:
        return {
            g: {"default": self.group(g).default, "independent": dict(self.group(g).independent)}
            for g in GROUPS
        }


# --------------------------------------------------------------------------- app settings

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_env_file(text: str) -> dict[str, str]:
    """The ``KEY=value`` pairs of a ``.env`` file (comments, ``export`` and quotes handled)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.sub(r"\s+#.*$", "", value)
        out[key] = value
    return out


def app_env_from_extra(
    extra: Mapping[str, Any] | None, *, conn_id: str = "connection"
) -> dict[str, str]:
    """An environment's app settings from its connection's extra (``app_env`` or ``app_env_file``)."""
    extra = extra or {}
    env: dict[str, str] = {}
    if extra.get("app_env_file"):
        path = Path(str(extra["app_env_file"]))
        try:
            env.update(parse_env_file(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ConfigError(
                f"{conn_id}: app_env_file {path} cannot be read ({exc.strerror}); fix the path in the connection's extra"
            ) from exc
    raw = extra.get("app_env")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else None  # blank, like empty: no settings
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{conn_id}: extra 'app_env' is not a JSON object ({exc})") from exc
    if raw:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{conn_id}: extra 'app_env' must be an object of NAME -> value")
        env.update({str(k): "" if v is None else str(v) for k, v in raw.items()})
    return env
