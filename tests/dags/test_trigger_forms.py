"""Every DAG's trigger form opens with an enabled Trigger button wherever its defaults make a run.

Airflow 3.3's form (``airflow/ui``, ``FlexibleForm``) decides per param, from the serialized
DAG the UI reads:

- *required*: the schema has a ``type`` and it is not a list holding ``"null"``; the field is
  marked required;
- *missing*: a required param whose value is None, undefined or ``""``; one missing param
  greys out the Trigger button (a red "!" on "Run Parameters", no field marked).

The browser tests (``tests/e2e/test_trigger_forms_browser.py``) click through the same forms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.pgtools import REPO

DAG_IDS = (
    "migration_create",
    "migration_execute",
    "migration_sync",
    "migration_backup",
    "migration_rollback",
    "sync_staging_to_prod",  # a pipeline DAG, from include/pipelines.example.yaml
)
NEEDS_INPUT = {"migration_execute": {"migration_file"}}  # params no default can fill


def ui_required(schema: dict[str, Any]) -> bool:
    """The UI's rule (``isRequired`` in FlexibleForm): a type, and not one that allows null."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def ui_missing(schema: dict[str, Any], value: Any) -> bool:
    """The UI's rule for the Trigger button: a required param with no value."""
    return ui_required(schema) and value in (None, "")


@pytest.fixture(scope="module")
def serialized_dags() -> dict[str, Any]:
    """Every DAG of the package (and the example pipeline's), serialized as the UI reads them."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    mp = pytest.MonkeyPatch()
    mp.setenv("MIGRATION_PIPELINES", str(Path(REPO / "include" / "pipelines.example.yaml")))
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"))
    finally:
        mp.undo()
    assert bag.import_errors == {}
    return {
        dag_id: DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id])).params
        for dag_id in DAG_IDS
    }


def _params(params: Any) -> dict[str, tuple[dict[str, Any], Any, str]]:
    """name -> (schema, default, description) of a DAG's params (an unset default is None, as
    the API hands it to the form)."""
    from airflow.sdk.definitions._internal.types import NOTSET

    out = {}
    for name in params:
        param = params.get_param(name)
        value = None if param.value is NOTSET else param.value
        out[name] = (param.schema, value, param.description or "")
    return out


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_no_optional_param_renders_as_required(
    dag_id: str, serialized_dags: dict[str, Any]
) -> None:
    params = _params(serialized_dags[dag_id])
    assert params, dag_id
    for name, (schema, default, description) in params.items():
        assert description, f"{dag_id}.{name} has no description"
        if ui_required(schema):
            assert description.startswith("Required."), (
                f"{dag_id}.{name} renders as required but its description does not say so"
            )
        else:
            assert not description.startswith("Required."), f"{dag_id}.{name}"
        if ui_missing(schema, default):
            assert name in NEEDS_INPUT.get(dag_id, set()), (
                f"{dag_id}.{name}: its default {default!r} counts as a missing required value in "
                "the trigger form and disables the Trigger button; make it optional "
                '(type ["null", ...], default None)'
            )


def test_the_rule_catches_the_broken_form() -> None:
    """What greyed the button out before (``Param("", type="string")``) fails the rule."""
    assert ui_missing({"type": "string"}, "")
    assert not ui_missing({"type": ["null", "string"]}, None)
    assert not ui_missing({"type": "boolean"}, False)
    assert not ui_required({})  # no type: the form does not mark it


def test_required_params_need_only_what_has_no_default(serialized_dags: dict[str, Any]) -> None:
    """Filling ``migration_file`` is all migration_execute's form needs."""
    params = _params(serialized_dags["migration_execute"])
    missing = {n for n, (schema, default, _) in params.items() if ui_missing(schema, default)}
    assert missing == {"migration_file"}


def test_params_are_generated_from_run_options(serialized_dags: dict[str, Any]) -> None:
    """Every option field renders optional (nullable) unless required, with the model's
    description; each DAG's params that are options carry the model's schema."""
    from migration_manager.airflow.params import REQUIRED, option_param
    from migration_manager.run_options import RunOptions

    for name, field in RunOptions.model_fields.items():
        assert field.description and field.title, f"RunOptions.{name} has no description/title"
        param = option_param(name)
        assert param.description and field.description in param.description
        assert ui_required(param.schema) == (name in REQUIRED), name
    for dag_id, params in serialized_dags.items():
        for name, (schema, _default, _description) in _params(params).items():
            if name in RunOptions.model_fields and name != "migration_file":  # file: no default
                assert schema == option_param(name).schema, f"{dag_id}.{name}"


def test_run_options_read_params() -> None:
    """Tasks read ``RunOptions.of_params``: an emptied field is the default; a bad value names
    the param; other DAGs' params are not options."""
    from migration_manager.errors import ConfigError
    from migration_manager.run_options import RunOptions

    options = RunOptions.of_params(
        {"rollback_on_failure": None, "notify_conn_id": None, "rule_set": "", "backup_id": "x"}
    )
    assert options.rollback_on_failure is True and options.rule_set is None
    assert RunOptions.of_params({"dry_run": True}).dry_run is True
    with pytest.raises(ConfigError, match="param on_destructive"):
        RunOptions.of_params({"on_destructive": "maybe"})
    with pytest.raises(ConfigError, match="param dry_run"):
        RunOptions.of_params({"dry_run": "yes"})


def test_default_dropdowns_replace_the_group_defaults() -> None:
    """rules (or a rule set's) first; each default dropdown that is set replaces its group's
    default; independent rules stay."""
    from migration_manager.config import MigrationRules
    from migration_manager.run_options import RunOptions

    rules = {"user": {"default": "schema-only", "independent": {"orders": "skip"}}}
    plain = RunOptions.of_params({"rules": rules})
    assert plain.chosen_rules() == MigrationRules.parse(rules)
    chosen = RunOptions.of_params(
        {"rules": rules, "user_default": "overwrite", "system_default": None}
    ).chosen_rules()
    assert chosen.user.default == "overwrite" and chosen.user.independent == {"orders": "skip"}
    assert chosen.system.default == "profile"
    saved = MigrationRules.parse({"system": {"default": "skip"}})
    over_set = RunOptions.of_params({"system_default": "upsert"}).chosen_rules(saved)
    assert over_set.system.default == "upsert"
    with pytest.raises(Exception, match="user_default"):
        RunOptions.of_params({"user_default": "profile"})  # profile is for system tables only


def test_default_dropdowns_render_as_optional_dropdowns(serialized_dags: dict[str, Any]) -> None:
    params = _params(serialized_dags["migration_sync"])
    for name in ("system_default", "user_default"):
        schema, default, _ = params[name]
        assert default is None and None in schema["enum"] and "upsert" in schema["enum"]
        assert not ui_required(schema)
    assert "New migration" in params["rules"][2]
