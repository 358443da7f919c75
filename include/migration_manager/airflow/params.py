"""The DAGs' Params, generated from the engine's ``RunOptions`` (and the restore's own params).

Airflow 3.3's trigger form counts a param as *required* when its schema has a ``type`` without
``"null"``, and as *missing* when its value is None or ``""``; one missing param greys out the
Trigger button. So every optional param is a ``["null", ...]`` type (its empty value means the
model's default), and each required one (``REQUIRED``) says so in its description.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param
from pydantic import BaseModel

from migration_manager.profiles import PROFILES
from migration_manager.run_options import RunOptions

REQUIRED = ("migration_file", "source_conn_id", "target_conn_id", "profile", "mode")
"""The params a run cannot do without (the form marks them; each description starts "Required.")."""

CREATE = ("source_conn_id", "profile", "rule_set", "system_default", "user_default", "rules")
EXECUTE = (
    "target_conn_id",
    "allow_drop",
    "allow_unsigned",
    "env_values",
    "on_missing_env",
    "on_missing_plugins",
    "allow_version_mismatch",
    "skip_backup",
    "rollback_on_failure",
    "backups_to_keep",
    "target_lock_timeout",
    "on_destructive",
    "max_delete_ratio",
    "max_apply_tasks",
    "dry_run",
    "notify_conn_id",
    "notify_to",
    "notify_events",
    "files_to_keep",
    "logs_to_keep",
)


def param_schema(model: type[BaseModel], *, title: str) -> dict[str, Any]:
    """A model's JSON schema as Airflow's Param takes it (``Param(schema=...)``).

    Generated from the model that validates the document (``Model.model_json_schema()``), then
    adapted: ``$ref``s inlined (the trigger form reads ``properties`` directly), the generated
    titles and the model's docstring left out, the form's ``title`` set.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return inline({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        return {  # property names are kept; the generated titles are not
            key: {n: inline(sub) for n, sub in value.items()}
            if key == "properties"
            else inline(value)
            for key, value in node.items()
            if key != "title"
        }

    schema.pop("description", None)
    return {**inline(schema), "title": title}


_OPTIONS = param_schema(RunOptions, title="")["properties"]
_DEFAULTS = RunOptions().as_params()


def option_param(name: str, value: Any = None, *, description: str | None = None) -> Param:
    """The Param of one ``RunOptions`` field: its schema, title and description from the model;
    its value ``value`` (else the model's default); nullable unless it is in ``REQUIRED``."""
    field = RunOptions.model_fields[name]
    schema = {k: v for k, v in _OPTIONS[name].items() if k not in ("default", "description")}
    if "anyOf" in schema:  # X | None: X's schema, then the field's own keys (its enum...)
        (variant,) = [v for v in schema.pop("anyOf") if v.get("type") != "null"]
        schema = {**variant, **schema}
    required = name in REQUIRED
    if not required:
        schema["type"] = ["null", schema["type"]]
    schema["title"] = field.title
    text = description or field.description or ""
    return Param(
        _DEFAULTS[name] if value is None else value,
        description=f"Required. {text}" if required else text,
        schema=schema,
    )


def option_params(names: tuple[str, ...], values: dict[str, Any] | None = None) -> dict[str, Param]:
    """The Params of these ``RunOptions`` fields, with ``values`` as their defaults."""
    values = values or {}
    return {name: option_param(name, values.get(name)) for name in names}


def create_params(values: dict[str, Any] | None = None) -> dict[str, Param]:
    return option_params(CREATE, values)


def execute_params(
    *, with_file: bool = True, values: dict[str, Any] | None = None
) -> dict[str, Param]:
    params: dict[str, Param] = {}
    if with_file:  # no default: the form asks for it
        file = option_param("migration_file")
        params["migration_file"] = Param(
            description=file.description, schema={**file.schema, "type": "string"}
        )
    return params | option_params(EXECUTE, values)


def sync_params(values: dict[str, Any] | None = None) -> dict[str, Param]:
    """migration_sync's (and a pipeline's) params: create's, then execute's without a file."""
    return create_params(values) | execute_params(with_file=False, values=values)


# --- migration_rollback and migration_backup -------------------------------------------------


def rollback_params() -> dict[str, Param]:
    return {
        "target_conn_id": option_param(
            "target_conn_id",
            description=(
                "Airflow connection (postgres) of the database whose backup to restore, e.g. prod."
            ),
        ),
        "backup_id": Param(
            None,
            type=["null", "string"],
            title="Backup id",
            description=(
                "The backup to restore, like bk-20260101T120000Z-1a2b3c. Ids are in the log of the "
                "backup task of each migration_execute/migration_sync run, in its collect_logs record, and "
                "in MIGRATION_STORE/backups/<target_conn_id>/<id>.json. Leave empty to list this "
                "target's backups in the run log (the run then fails)."
            ),
        ),
        "mode": Param(
            "in_place",
            type="string",
            enum=["in_place", "new_database"],
            title="Mode",
            description=(
                "Required. in_place (scenario A): restore into the target database itself, in one "
                "transaction. new_database (scenario B, blue-green): create new_database_name on "
                "the same server and restore into it, leaving the current database untouched, "
                "then switch traffic."
            ),
        ),
        "new_database_name": Param(
            None,
            type=["null", "string"],
            title="New database name",
            description="mode new_database only: the database to create (must not exist).",
        ),
        "force": Param(
            False,
            type=["null", "boolean"],
            title="Force",
            description=(
                "Restore despite: other clients connected to the target (in_place), an application "
                "version different from the backup's, a different PostgreSQL major version. A damaged "
                "backup is refused regardless."
            ),
        ),
    }


def standalone_backup_params() -> dict[str, Param]:
    return {
        "target_conn_id": option_param(
            "target_conn_id",
            description="Airflow connection (postgres) of the database to back up, e.g. prod.",
        ),
        "profile": option_param(
            "profile",
            description=(
                "Says where the application's version and settings are, to record them with the "
                f"backup ({', '.join(sorted(PROFILES))})."
            ),
        ),
        **option_params(("backups_to_keep", "target_lock_timeout")),
    }
