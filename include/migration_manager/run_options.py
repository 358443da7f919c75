"""The options of a migration run, defined once: ``RunOptions``.

Every option of ``migration_execute`` / ``migration_sync`` is a field here, with its default,
type, validator and description. The DAGs' Params are generated from it
(``migration_manager.airflow.params``), a pipeline's ``options`` are the same fields with the
defaults of a run nobody watches (``UNATTENDED``, ``migration_manager.pipelines``), and the
tasks read ``RunOptions.of_params(context["params"])`` instead of the raw params.

An unset optional value (``None``: the trigger form's empty field, or a YAML ``null``) means the
field's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)

from migration_manager import validation

if TYPE_CHECKING:
    from pydantic.json_schema import JsonDict
from migration_manager.config import (
    DEFAULT_PROFILE,
    PROFILE_NAMES,
    RULES,
    MigrationRules,
    Rule,
    SystemDefault,
    check_profile,
)
from migration_manager.errors import ConfigError
from migration_manager.notifications import DEFAULT_EVENTS, EVENTS, check_events, check_recipients
from migration_manager.rule_sets import check_name

DEFAULT_LOCK_TIMEOUT = 1800
DEFAULT_MAX_DELETE_RATIO = 0.1
DEFAULT_FILES_TO_KEEP = 20
DEFAULT_LOGS_TO_KEEP = 100
DEFAULT_BACKUPS_TO_KEEP = 10
# a person triggers migration_execute/migration_sync and answers; nobody does at night
UNATTENDED: dict[str, str] = {
    "on_missing_plugins": "fail",
    "on_missing_env": "fail",
    "on_destructive": "fail",
}
INPUTS = (
    "source_conn_id",
    "target_conn_id",
    "profile",
    "rules",
    "rule_set",
    "system_default",
    "user_default",
    "migration_file",
)
"""What a run migrates (a pipeline gives these at its top level); the rest are its options."""


def check_ratio(value: Any) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"max_delete_ratio {value!r} is not a number; give a share of rows between 0 and 1, e.g. 0.1"
        ) from None
    if not 0 <= ratio <= 1:
        raise ConfigError(
            f"max_delete_ratio {ratio} is outside 0..1; give a share of rows, e.g. 0.1 for 10 %"
        )
    return ratio


def check_keep(value: Any, name: str) -> int:
    try:
        keep = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} is not a whole number (0 keeps everything)") from None
    if keep < 0:
        raise ConfigError(f"{name} must be 0 (keep everything) or more, got {keep}")
    return keep


def _ratio(value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"max_delete_ratio {value!r} is not a number")
    return check_ratio(value)


def _keep(name: str, *, least: int = 0) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} {value!r} is not a whole number")
        if least and value < least:
            raise ConfigError(f"{name} must be {least} or more, not {value}")
        return check_keep(value, name)

    return BeforeValidator(validation.checked(check))


def _rule_set(value: Any) -> Any:
    if value is None or value == "":
        return None
    return validation.checked(check_name)(value)


def _seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"target_lock_timeout {value!r} is not a number of seconds (0 or more)")
    return int(value)


_AS_IN_RULES: JsonDict = {"null": "(as in the rules / rule set)"}  # the form's empty choice
OnMissingEnv = Literal["ask", "fail"]
OnMissingPlugins = Literal["ask", "continue", "fail"]
OnDestructive = Literal["ask", "fail", "continue"]

_ENV_VALUE_SCHEMA: JsonDict = {
    "additionalProperties": {
        "oneOf": [
            {"type": ["string", "number", "boolean", "null"]},
            {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "variable": {"type": "string", "minLength": 1},
                    "connection": {"type": "string", "minLength": 1},
                },
            },
        ]
    }
}


class RunOptions(BaseModel):
    """One migration run's inputs and options (a DAG run's params, a pipeline's settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what to migrate -----------------------------------------------------------------
    source_conn_id: StrictStr = Field(
        default="migration_source",
        min_length=1,
        title="Source connection",
        description="Airflow connection (postgres) of the environment to copy from, e.g. staging.",
    )
    profile: Annotated[
        StrictStr,
        AfterValidator(validation.checked(check_profile)),
        Field(json_schema_extra={"enum": list(PROFILE_NAMES)}),
    ] = Field(
        default=DEFAULT_PROFILE,
        title="Application profile",
        description=(
            "nocobase: NocoBase's built-in tables and default rules; generic: every table is "
            "user-defined."
        ),
    )
    rule_set: Annotated[StrictStr | None, BeforeValidator(_rule_set)] = Field(
        default=None,
        title="Rule set",
        description=(
            "Name of a saved rule set (Migrations page: Rules); when given, its profile and rules "
            "replace the profile and the rules params."
        ),
    )
    system_default: SystemDefault | None = Field(
        default=None,
        title="System tables: default rule",
        description=(
            "The default rule of the application's built-in tables for this run (profile: each "
            "table's own default). Empty: the one of the rules param (or of the rule set). When "
            "set, it replaces that default; independent rules stay."
        ),
        json_schema_extra={"enum": [None, *RULES, "profile"], "values_display": _AS_IN_RULES},
    )
    user_default: Rule | None = Field(
        default=None,
        title="User-defined tables: default rule",
        description=(
            "The default rule of the user-defined tables for this run. Empty: the one of the "
            "rules param (or of the rule set). When set, it replaces that default; independent "
            "rules stay."
        ),
        json_schema_extra={"enum": [None, *RULES], "values_display": _AS_IN_RULES},
    )
    rules: MigrationRules = Field(
        default=MigrationRules(),
        title="Migration rules (JSON)",
        description=(
            "The easiest way to choose rules is the Migrations page: New migration (per table, "
            "with a preview), then Sync now or save a rule set. Here: default rule per group and "
            "independent rules per table, as JSON (paste a whole document; the editor reformats "
            "while you type). Rules: "
            + ", ".join(RULES)
            + '; system default may also be "profile" (each built-in table\'s own default). '
            "How the rule params combine: rule_set, when given, replaces this document and the "
            "profile; then each default dropdown that is set replaces its group's default."
        ),
    )
    migration_file: StrictStr | None = Field(
        default=None,
        min_length=1,
        title="Migration file",
        description=(
            "URI returned by migration_create (or a file name in the migration store's files/ "
            "folder)."
        ),
    )
    target_conn_id: StrictStr = Field(
        default="migration_target",
        min_length=1,
        title="Target connection",
        description="Airflow connection (postgres) of the environment to change, e.g. prod.",
    )
    # --- checks and questions ------------------------------------------------------------
    allow_drop: StrictBool = Field(
        default=False,
        title="Drop what the source lacks",
        description=(
            "Also drop target columns, indexes and constraints that the source does not have "
            "(off: kept, with a warning)."
        ),
    )
    allow_unsigned: StrictBool = Field(
        default=False,
        title="Allow unsigned migration files",
        description=(
            "Run a migration file that is not signed by a trusted key (Variable "
            "migration_trusted_keys): unsigned, signed by an unknown key, or with a signature that "
            "does not match. Off: such files are refused before anything runs."
        ),
    )
    env_values: dict[str, Any] = Field(
        default_factory=dict,
        title="Environment variable values",
        description=(
            "Values for dynamic environment variables/secrets the target lacks, as NAME -> value, "
            'or NAME -> a reference resolved only inside the env_values task: {"variable": '
            '"<Airflow Variable key>"} or {"connection": "<connection id>"} (its password); both '
            "go through Airflow's secrets backend. WARNING: a secret given as a literal value "
            "stays in the run's conf in Airflow's metadata database and is shown with the run: "
            "give secrets by reference (or answer the prompt). Missing ones are asked for in the "
            "UI (on_missing_env=ask). Secrets are stored encrypted with the target app's AES key."
        ),
        json_schema_extra=_ENV_VALUE_SCHEMA,
    )
    on_missing_env: OnMissingEnv = Field(
        default="ask",
        title="Missing environment variables",
        description=(
            "ask: pause the run and ask in the UI (Required actions); fail: stop with the list "
            "(scheduled runs)."
        ),
    )
    on_missing_plugins: OnMissingPlugins = Field(
        default="ask",
        title="Plugins missing in the target",
        description="ask: pause for 'continue anyway' or 'stop'; continue: warn and go on; fail: stop.",
    )
    allow_version_mismatch: StrictBool = Field(
        default=False,
        title="Allow different versions",
        description=(
            "Migrate even when the source and target run different application versions or "
            "different versions of an enabled plugin (off: the run stops before writing, naming "
            "both)."
        ),
    )
    # --- backup and rollback -------------------------------------------------------------
    skip_backup: StrictBool = Field(
        default=False,
        title="Skip the backup",
        description=(
            "Take no backup of the target before writing (faster); automatic rollback is then "
            "unavailable for the run."
        ),
    )
    rollback_on_failure: StrictBool = Field(
        default=True,
        title="Roll back when a table fails",
        description=(
            "When an apply_table unit fails (after its retries), restore the backup taken before "
            "this run and verify every table. Off: the failure reports the backup id to restore "
            "by hand (migration_rollback)."
        ),
    )
    backups_to_keep: Annotated[int, _keep("backups_to_keep", least=1)] = Field(
        default=DEFAULT_BACKUPS_TO_KEEP,
        ge=1,
        title="Backups to keep",
        description=(
            "How many backups of this target to keep in MIGRATION_STORE/backups/<target>/; older "
            "ones are removed after a successful new backup."
        ),
    )
    target_lock_timeout: Annotated[int, BeforeValidator(validation.checked(_seconds))] = Field(
        default=DEFAULT_LOCK_TIMEOUT,
        ge=0,
        title="Target lock timeout (seconds)",
        description=(
            "Two migrations never write to one target at once: when another run holds the "
            "target's lock, wait this long for it, then fail naming that run."
        ),
    )
    # --- destructive plans ---------------------------------------------------------------
    on_destructive: OnDestructive = Field(
        default="ask",
        title="Destructive plans",
        description=(
            "A plan is destructive when a table would lose more than max_delete_ratio of its rows, "
            "or something would be dropped (allow_drop). ask: the run waits for Approve / Reject "
            "under Required actions; fail: stop before any write (pipelines); continue: go on."
        ),
    )
    max_delete_ratio: Annotated[float, BeforeValidator(validation.checked(_ratio))] = Field(
        default=DEFAULT_MAX_DELETE_RATIO,
        ge=0,
        le=1,
        title="Largest share of a table's rows a run may delete",
        description="0.1: deleting more than 10 % of a table's rows makes the plan destructive.",
    )
    max_apply_tasks: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        title="Most apply_table tasks",
        description=(
            "Units are packed into at most this many apply_table tasks (a large unit keeps a task "
            "of its own, small ones share one; with this many units or fewer, one task per unit). "
            "Empty: two per slot of the pool (MM_POOL_SLOTS, default 2)."
        ),
    )
    dry_run: StrictBool = Field(
        default=False,
        title="Dry run",
        description=(
            "Checks and plan, then every unit applied in a transaction that is rolled back: the "
            "run log says what a run would do (marked as a dry run). No backup, no env_write, "
            "nothing committed; questions are not asked."
        ),
    )
    # --- notifications -------------------------------------------------------------------
    notify_conn_id: StrictStr | None = Field(
        default=None,
        title="Notification connection",
        description=(
            "An Airflow connection of type smtp (from_email in its extra); empty: no notifications."
        ),
    )
    notify_to: Annotated[
        tuple[str, ...],
        BeforeValidator(validation.checked(lambda v: check_recipients(v, source="notify_to"))),
    ] = Field(default=(), title="Notify", description="E-mail addresses told about the run.")
    notify_events: Annotated[
        tuple[str, ...],
        BeforeValidator(validation.checked(lambda v: check_events(v, source="notify_events"))),
        Field(json_schema_extra={"items": {"type": "string", "enum": list(EVENTS)}}),
    ] = Field(
        default=DEFAULT_EVENTS,
        title="Notify about",
        description=(
            "failure: the run failed; rollback: it failed and the target was rolled back; "
            "question: it waits for an answer under Required actions; refused: a destructive "
            "plan was refused; success: it succeeded."
        ),
        json_schema_extra={"uniqueItems": True},
    )
    # --- retention -----------------------------------------------------------------------
    files_to_keep: Annotated[int, _keep("files_to_keep")] = Field(
        default=DEFAULT_FILES_TO_KEEP,
        ge=0,
        title="Migration files to keep",
        description=(
            "Migration files run against this target only, newest first; older ones are removed "
            "after the run. Files a kept backup or a running run uses are never removed. 0 keeps "
            "every file."
        ),
    )
    logs_to_keep: Annotated[int, _keep("logs_to_keep")] = Field(
        default=DEFAULT_LOGS_TO_KEEP,
        ge=0,
        title="Run logs to keep",
        description=(
            "Run logs of this target, newest first; older ones are removed after the run (the log "
            "of a run whose backup is kept stays). 0 keeps every log."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _unset_means_default(cls, data: Any) -> Any:
        """None (an emptied form field, a YAML null) is the field's default."""
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @classmethod
    def of_params(cls, params: Mapping[str, Any] | None) -> RunOptions:
        """The options of a DAG run's params (the params of other DAGs, e.g. migration_rollback's
        ``backup_id``, are not options and are left out). Errors name the param."""
        known = {k: v for k, v in (params or {}).items() if k in cls.model_fields}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            problems = [
                f"param {'.'.join(map(str, e['loc'])) or '?'}: {validation.text(e)}"
                for e in exc.errors()
            ]
            raise ConfigError("Invalid run params: " + "; ".join(problems)) from None

    def chosen_rules(self, base: MigrationRules | None = None) -> MigrationRules:
        """The run's rules: ``base`` (a rule set's rules) or the rules param, with the default
        dropdowns that are set replacing their group's default."""
        rules = base if base is not None else self.rules
        if self.system_default is not None:
            rules = rules.model_copy(
                update={"system": rules.system.model_copy(update={"default": self.system_default})}
            )
        if self.user_default is not None:
            rules = rules.model_copy(
                update={"user": rules.user.model_copy(update={"default": self.user_default})}
            )
        return rules

    def as_params(self) -> dict[str, Any]:
        """The run's conf (the params' values), JSON types."""
        return self.model_dump(mode="json")
