"""Nightly sync pipelines: a YAML file of source -> target syncs, each one a scheduled DAG.

The file (``MIGRATION_PIPELINES``; an example ships as ``include/pipelines.example.yaml``)::

    pipelines:
      - name: staging_to_prod              # DAG id sync_staging_to_prod
        source_conn_id: migration_source
        target_conn_id: migration_target
        profile: nocobase                  # optional, default nocobase
        schedule: "0 2 * * *"              # cron, or a preset such as "@daily"
        rules:                             # same shape as the rules param (optional)
          user: {default: schema-only, independent: {orders: upsert}}
        # rule_set: nightly                # or: a saved rule set (Migrations page: Rule sets)
        options:                           # all optional
          backup: true                     # take a backup of the target first
          rollback: true                   # restore it when a table fails
          on_missing_plugins: fail         # ask | continue | fail (nobody answers at night)
          on_missing_env: fail             # ask | fail
          allow_drop: false
          allow_unsigned: false            # run files not signed by a trusted key (default false)
          pool: migration_units            # Airflow pool capping the table units applied at once
          on_destructive: fail             # ask | continue | fail: a plan deleting > max_delete_ratio
          max_delete_ratio: 0.1            #   of a table's rows, or dropping something (allow_drop)
          notify_conn_id: smtp_alerts      # an smtp connection; unset: no notifications
          notify_to: [ops@example.com]
          notify_events: [failure, rollback, question, refused]   # and/or success
          files_to_keep: 20                # migration files / run logs of this target kept
          logs_to_keep: 100                #   in the store (0 keeps everything)

Loading only reads the file: no database, no network. Every error names the file, the
pipeline and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migration_manager.config import RuleSet
from migration_manager.destructive import DEFAULT_MAX_DELETE_RATIO, ON_DESTRUCTIVE, check_ratio
from migration_manager.errors import ConfigError
from migration_manager.notifications import DEFAULT_EVENTS, check_events, check_recipients
from migration_manager.profiles import PROFILES
from migration_manager.retention import DEFAULT_FILES_TO_KEEP, DEFAULT_LOGS_TO_KEEP, check_keep
from migration_manager.rulesets import check_name

DEFAULT_POOL = "migration_units"
PRESETS = ("@once", "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
KEYS = (
    "name",
    "source_conn_id",
    "target_conn_id",
    "profile",
    "schedule",
    "rules",
    "rule_set",
    "options",
)
REQUIRED = ("name", "source_conn_id", "target_conn_id", "schedule")
OPTIONS: dict[str, tuple[type, tuple[str, ...] | None]] = {
    "backup": (bool, None),
    "rollback": (bool, None),
    "on_missing_plugins": (str, ("ask", "continue", "fail")),
    "on_missing_env": (str, ("ask", "fail")),
    "allow_drop": (bool, None),
    "allow_unsigned": (bool, None),
    "pool": (str, None),
    "on_destructive": (str, ON_DESTRUCTIVE),
    "notify_conn_id": (str, None),
    # checked by their own functions below (lists, numbers)
    "max_delete_ratio": (object, None),
    "notify_to": (object, None),
    "notify_events": (object, None),
    "files_to_keep": (object, None),
    "logs_to_keep": (object, None),
}
_NAME = re.compile(r"^[A-Za-z0-9_]{1,200}$")
_POOL = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")


class PipelineError(ConfigError):
    """The pipelines file is unreadable or a pipeline in it is invalid."""


@dataclass(frozen=True)
class Pipeline:
    name: str
    source_conn_id: str
    target_conn_id: str
    schedule: str
    profile: str = "nocobase"
    rules: Mapping[str, Any] = field(default_factory=dict)
    rule_set: str = ""  # a saved rule set's name: its profile and rules replace the two above
    backup: bool = True
    rollback: bool = True
    on_missing_plugins: str = "fail"
    on_missing_env: str = "fail"
    allow_drop: bool = False
    allow_unsigned: bool = False  # the sync runs files not signed by a trusted key
    pool: str = DEFAULT_POOL
    on_destructive: str = "fail"  # nobody approves at night
    max_delete_ratio: float = DEFAULT_MAX_DELETE_RATIO
    notify_conn_id: str = ""
    notify_to: tuple[str, ...] = ()
    notify_events: tuple[str, ...] = DEFAULT_EVENTS
    files_to_keep: int = DEFAULT_FILES_TO_KEEP
    logs_to_keep: int = DEFAULT_LOGS_TO_KEEP

    @property
    def dag_id(self) -> str:
        return f"sync_{self.name}"

    def conf(self) -> dict[str, Any]:
        """The run conf of a sync with this pipeline's settings (the DAG's param defaults)."""
        return {
            "source_conn_id": self.source_conn_id,
            "target_conn_id": self.target_conn_id,
            "profile": self.profile,
            "rules": dict(self.rules),
            "rule_set": self.rule_set,
            "allow_drop": self.allow_drop,
            "allow_unsigned": self.allow_unsigned,
            "on_missing_plugins": self.on_missing_plugins,
            "on_missing_env": self.on_missing_env,
            "skip_backup": not self.backup,
            "rollback_on_failure": self.rollback,
            "on_destructive": self.on_destructive,
            "max_delete_ratio": self.max_delete_ratio,
            "notify_conn_id": self.notify_conn_id,
            "notify_to": list(self.notify_to),
            "notify_events": list(self.notify_events),
            "files_to_keep": self.files_to_keep,
            "logs_to_keep": self.logs_to_keep,
        }


def _valid_schedule(value: str) -> bool:
    if value.startswith("@"):
        return value in PRESETS
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter comes with Airflow
        return len(value.split()) in (5, 6)
    return bool(croniter.is_valid(value))


def parse_pipelines(doc: Any, *, source: str = "pipelines") -> list[Pipeline]:
    """Validate a parsed pipelines document; errors name the pipeline and the key."""
    if doc is None:
        return []
    if not isinstance(doc, Mapping) or set(doc) - {"pipelines"}:
        raise PipelineError(f"{source}: expected a mapping with one key 'pipelines' (a list)")
    items = doc.get("pipelines") or []
    if not isinstance(items, list):
        raise PipelineError(f"{source}: 'pipelines' must be a list of pipelines")
    found: list[Pipeline] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        label = f"{source}: pipeline #{index}"
        if not isinstance(item, Mapping):
            raise PipelineError(f"{label}: expected a mapping with keys {', '.join(KEYS)}")
        if isinstance(item.get("name"), str) and item["name"]:
            label = f"{source}: pipeline {item['name']!r}"
        unknown = sorted(set(map(str, item)) - set(KEYS))
        if unknown:
            raise PipelineError(
                f"{label}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(KEYS)}"
            )
        for key in REQUIRED:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise PipelineError(f"{label}: key {key!r} is required (a non-empty string)")
        name = str(item["name"])
        if not _NAME.match(name):
            raise PipelineError(
                f"{label}: key 'name': {name!r} may hold only letters, digits and '_' (it becomes the DAG id sync_<name>)"
            )
        if name in seen:
            raise PipelineError(f"{label}: key 'name': {name!r} is used by an earlier pipeline")
        seen.add(name)
        schedule = str(item["schedule"]).strip()
        if not _valid_schedule(schedule):
            raise PipelineError(
                f"{label}: key 'schedule': {schedule!r} is neither a cron expression "
                f"(5 fields, e.g. '0 2 * * *') nor a preset ({', '.join(PRESETS)})"
            )
        profile = item.get("profile", "nocobase")
        if profile not in PROFILES:
            raise PipelineError(
                f"{label}: key 'profile': unknown profile {profile!r}; use one of {', '.join(sorted(PROFILES))}"
            )
        try:
            rules = RuleSet.parse(item.get("rules"), source=f"{label}: key 'rules'").to_dict()
        except PipelineError:
            raise
        except ConfigError as exc:
            raise PipelineError(str(exc)) from exc
        rule_set = item.get("rule_set") or ""
        if rule_set:
            if "rules" in item:
                raise PipelineError(
                    f"{label}: give either 'rules' or 'rule_set' (a saved rule set), not both"
                )
            try:
                check_name(rule_set)
            except ConfigError as exc:
                raise PipelineError(f"{label}: key 'rule_set': {exc}") from exc
        options = item.get("options") or {}
        if not isinstance(options, Mapping):
            raise PipelineError(f"{label}: key 'options' must be a mapping")
        checked: dict[str, Any] = {}
        for key, value in options.items():
            if key not in OPTIONS:
                raise PipelineError(
                    f"{label}: key 'options.{key}' is unknown; allowed: {', '.join(OPTIONS)}"
                )
            kind, allowed = OPTIONS[key]
            if not isinstance(value, kind) or (allowed and value not in allowed):
                what = f"one of {', '.join(allowed)}" if allowed else kind.__name__
                raise PipelineError(f"{label}: key 'options.{key}': {value!r} is not {what}")
            if key == "pool" and not _POOL.match(str(value)):
                raise PipelineError(f"{label}: key 'options.pool': {value!r} is not a pool name")
            checked[key] = _option(label, key, value)
        found.append(
            Pipeline(
                name=name,
                source_conn_id=str(item["source_conn_id"]).strip(),
                target_conn_id=str(item["target_conn_id"]).strip(),
                schedule=schedule,
                profile=str(profile),
                rules=rules,
                rule_set=rule_set,
                **checked,
            )
        )
    return found


def _option(label: str, key: str, value: Any) -> Any:
    """The options that are lists or numbers, checked by the module that uses them."""
    where = f"{label}: key 'options.{key}'"
    try:
        if key == "max_delete_ratio":
            if isinstance(value, bool):
                raise ConfigError(f"max_delete_ratio {value!r} is not a number")
            return check_ratio(value)
        if key == "notify_to":
            return check_recipients(value, source="notify_to")
        if key == "notify_events":
            return check_events(value, source="notify_events")
        if key in ("files_to_keep", "logs_to_keep"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} {value!r} is not a whole number")
            return check_keep(value, key)
    except ConfigError as exc:
        raise PipelineError(f"{where}: {exc}") from exc
    return value


def load_pipelines(path: str | Path) -> list[Pipeline]:
    """The pipelines of a YAML file (which must exist)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PipelineError(
            f"Pipelines file {path} does not exist (MIGRATION_PIPELINES); fix the path or unset it"
        ) from exc
    except OSError as exc:
        raise PipelineError(f"Pipelines file {path} cannot be read ({exc.strerror})") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"Pipelines file {path} is not valid YAML: {exc}") from exc
    return parse_pipelines(doc, source=f"Pipelines file {path}")
