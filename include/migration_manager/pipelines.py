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
          skip_backup: false               # take a backup of the target first
          rollback_on_failure: true        # restore it when a table fails
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
          # ... and every other run option of migration_sync (RunOptions), e.g.
          # backups_to_keep: 10, target_lock_timeout: 1800, allow_version_mismatch: false

The options are ``migration_manager.run_options.RunOptions`` with the defaults of a run nobody
watches; the old names ``backup: <bool>`` / ``rollback: <bool>`` are still read (a
DeprecationWarning names the new key).

Loading only reads the file: no database, no network. Every error names the file, the
pipeline and the key.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from migration_manager import validation
from migration_manager.config import MigrationRules, check_profile, rule_problems
from migration_manager.errors import ConfigError
from migration_manager.rule_sets import check_name
from migration_manager.run_options import (
    INPUTS,
    UNATTENDED,
    OnDestructive,
    OnMissingEnv,
    OnMissingPlugins,
    RunOptions,
)

DEFAULT_POOL = "migration_units"
PRESETS = ("@once", "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,200}$")
_POOL = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")


class PipelineError(ConfigError):
    """The pipelines file is unreadable or a pipeline in it is invalid."""


# --------------------------------------------------------------------------- the document


def _valid_schedule(value: str) -> bool:
    if value.startswith("@"):
        return value in PRESETS
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter comes with Airflow
        return len(value.split()) in (5, 6)
    return bool(croniter.is_valid(value))


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} may hold only letters, digits and '_' (it becomes the DAG id sync_<name>)"
        )
    return value


def _schedule(value: str) -> str:
    if not _valid_schedule(value):
        raise ValueError(
            f"{value!r} is neither a cron expression "
            f"(5 fields, e.g. '0 2 * * *') nor a preset ({', '.join(PRESETS)})"
        )
    return value


def _rule_set(value: str | None) -> str:
    if not value:
        return ""
    return validation.checked(check_name)(value)


def _pool(value: str) -> str:
    if not _POOL.match(value):
        raise ValueError(f"{value!r} is not a pool name")
    return value


RENAMED = {"backup": "skip_backup", "rollback": "rollback_on_failure"}
"""Option names of earlier pipelines files -> the run option they set (``backup: false`` is
``skip_backup: true``); still read, with a DeprecationWarning naming the new key."""


def _options(value: Any) -> Any:
    """A pipeline's ``options`` as written: None is {}; the run's inputs are refused (they are
    the pipeline's own keys); the old names ``backup``/``rollback`` are read as their new ones."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return value
    inputs = sorted(set(value) & set(INPUTS))
    if inputs:
        raise ValueError(
            f"{', '.join(map(repr, inputs))} belong(s) at the pipeline's top level, not under options"
        )
    out = dict(value)
    for old, new in RENAMED.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"give {new!r} only ({old!r} is its old name)")
        flag = out.pop(old)
        if not isinstance(flag, bool):
            raise ValueError(f"{old!r} (now {new!r}) {flag!r} is not bool")
        value = not flag if old == "backup" else flag
        warnings.warn(
            f"pipelines: option {old!r} is deprecated; write {new}: {str(value).lower()}",
            DeprecationWarning,
            stacklevel=2,
        )
        out[new] = value
    return out


Required = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]


class PipelineOptions(RunOptions):
    """A pipeline's ``options``: the run options (``RunOptions``) with the defaults of a run
    nobody watches (``UNATTENDED``), and the pool of its table units."""

    on_missing_plugins: OnMissingPlugins = UNATTENDED["on_missing_plugins"]  # type: ignore[assignment]
    on_missing_env: OnMissingEnv = UNATTENDED["on_missing_env"]  # type: ignore[assignment]
    on_destructive: OnDestructive = UNATTENDED["on_destructive"]  # type: ignore[assignment]
    pool: Annotated[StrictStr, AfterValidator(_pool)] = DEFAULT_POOL


class Pipeline(BaseModel):
    """One pipeline of the file: a scheduled sync ``source_conn_id -> target_conn_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[Required, AfterValidator(_name)]
    source_conn_id: Required
    target_conn_id: Required
    profile: Annotated[StrictStr, AfterValidator(validation.checked(check_profile))] = "nocobase"
    schedule: Annotated[Required, AfterValidator(_schedule)]
    rules: MigrationRules = MigrationRules()  # same shape as the rules param
    rule_set: Annotated[StrictStr | None, AfterValidator(_rule_set)] = None
    options: Annotated[PipelineOptions, BeforeValidator(_options)] = PipelineOptions()

    @model_validator(mode="after")
    def _rules_or_rule_set(self) -> Pipeline:
        if self.rule_set and "rules" in self.model_fields_set:
            raise ValueError("give either 'rules' or 'rule_set' (a saved rule set), not both")
        return self

    @property
    def dag_id(self) -> str:
        return f"sync_{self.name}"

    @property
    def pool(self) -> str:
        return self.options.pool

    def run_options(self) -> RunOptions:
        """The options of this pipeline's runs (its DAG's param defaults)."""
        return RunOptions.model_validate(
            {
                **self.options.model_dump(exclude={"pool"}),
                "source_conn_id": self.source_conn_id,
                "target_conn_id": self.target_conn_id,
                "profile": self.profile,
                "rules": self.rules,
                "rule_set": self.rule_set,
            }
        )

    def conf(self) -> dict[str, Any]:
        """The run conf of a sync with this pipeline's settings (the DAG's param defaults)."""
        return self.run_options().as_params()


class PipelinesFile(BaseModel):
    """The pipelines file: ``pipelines:`` and a list of pipelines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipelines: Annotated[list[Pipeline], BeforeValidator(lambda v: [] if v is None else v)] = []


KEYS = tuple(validation.keys_of(Pipeline))
REQUIRED = tuple(n for n, f in Pipeline.model_fields.items() if f.is_required())
OPTIONS = tuple(k for k in validation.keys_of(PipelineOptions) if k not in INPUTS)


def _label(doc: Any, source: str, index: int) -> str:
    """``<source>: pipeline 'nightly'`` (its name when it has one), else ``pipeline #2``."""
    item: Any = None
    if isinstance(doc, Mapping) and isinstance(doc.get("pipelines"), list):
        items = doc["pipelines"]
        item = items[index] if index < len(items) else None
    name = item.get("name") if isinstance(item, Mapping) else None
    if isinstance(name, str) and name:
        return f"{source}: pipeline {name!r}"
    return f"{source}: pipeline #{index + 1}"


def _problems(doc: Any, exc: ValidationError, source: str) -> list[str]:
    """The file's validation errors, each naming the file, the pipeline and the key."""
    errors = exc.errors()
    problems: list[str] = []
    unknown, others = validation.split(errors)
    for loc, keys in unknown.items():
        names = ", ".join(map(repr, sorted(keys)))
        if not loc:
            problems.append(f"{source}: expected a mapping with one key 'pipelines' (a list)")
        elif len(loc) == 2:
            problems.append(
                f"{_label(doc, source, int(loc[1]))}: unknown key(s) {names}; allowed: {', '.join(KEYS)}"
            )
        else:
            for key in sorted(keys):
                problems.append(
                    f"{_label(doc, source, int(loc[1]))}: key 'options.{key}' is unknown; "
                    f"allowed: {', '.join(OPTIONS)}"
                )
    indexes = sorted({int(e["loc"][1]) for e in errors if len(e["loc"]) >= 2})
    for index in indexes:
        label = _label(doc, source, index)
        problems += rule_problems(
            errors, f"{label}: key 'rules'", under=("pipelines", index, "rules")
        )
    for err in others:
        loc = tuple(err["loc"])
        if not loc:
            problems.append(f"{source}: expected a mapping with one key 'pipelines' (a list)")
            continue
        if len(loc) == 1:
            problems.append(f"{source}: 'pipelines' must be a list of pipelines")
            continue
        label = _label(doc, source, int(loc[1]))
        key = ".".join(map(str, loc[2:]))
        if len(loc) == 2:
            if err["type"] in validation.TYPE_ERRORS:
                problems.append(f"{label}: expected a mapping with keys {', '.join(KEYS)}")
            else:
                problems.append(f"{label}: {validation.text(err)}")
        elif loc[2] == "rules":
            continue  # above, in the rules' own words
        elif loc[2] in REQUIRED and len(loc) == 3 and err["type"] != "value_error":
            problems.append(f"{label}: key {key!r} is required (a non-empty string)")
        elif key == "options" and err["type"] in validation.TYPE_ERRORS:
            problems.append(f"{label}: key 'options' must be a mapping")
        else:
            problems.append(f"{label}: key {key!r}: {validation.text(err)}")
    return list(dict.fromkeys(problems))


def parse_pipelines(doc: Any, *, source: str = "pipelines") -> list[Pipeline]:
    """Validate a parsed pipelines document; errors name the pipeline and the key."""
    if doc is None:
        return []
    try:
        model = PipelinesFile.model_validate(doc)
    except ValidationError as exc:
        raise PipelineError("\n".join(_problems(doc, exc, source))) from None
    seen: set[str] = set()
    for index, entry in enumerate(model.pipelines):
        if entry.name in seen:
            raise PipelineError(
                f"{_label(doc, source, index)}: key 'name': {entry.name!r} is used by an earlier pipeline"
            )
        seen.add(entry.name)
    return list(model.pipelines)


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
