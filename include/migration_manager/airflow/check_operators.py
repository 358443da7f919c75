"""Pre-flight check tasks: ``env_check``, ``env_values`` (may prompt), ``plugin_check`` (may prompt).

The prompts are Airflow human-in-the-loop tasks: the run waits in *awaiting input* and the
question shows under *Required actions* in the UI (or ``PATCH .../hitlDetails`` in the API).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import BaseOperator, Param
from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret

from migration_manager import checks
from migration_manager.airflow import task_ids
from migration_manager.airflow.common import (
    engine_errors,
    is_dry_run,
    migration_manifest,
    responder,
    unanswered,
)
from migration_manager.airflow.connections import environment
from migration_manager.airflow.xcom_models import Json
from migration_manager.errors import EnvironmentMismatchError
from migration_manager.manifest import Plugin
from migration_manager.manifest import Variable as EnvVariable
from migration_manager.pg import identity_of
from migration_manager.run_options import RunOptions

if TYPE_CHECKING:
    from airflow.sdk import Context

NOTHING_TO_APPLY = (
    "Nothing to apply: every table already matches the source for its rule and no "
    "environment value is to be written"
)
NO_BACKUP = (
    "skip_backup is set: no backup is taken, and automatic rollback is unavailable for this run"
)
NOTHING_TO_WRITE = "No environment variables to write"
PROVIDE = "Continue with these values"
CONTINUE = "Continue anyway"
STOP = "Stop the migration"


def _lookup(ref: checks.ValueRef) -> str | None:
    """A referenced value, fetched here (in the task that encrypts it) and masked at once."""
    from airflow.sdk import BaseHook, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException

    value: Any
    if ref.kind == "variable":
        value = Variable.get(ref.key, default=None)
    else:
        try:
            value = BaseHook.get_connection(ref.key).password
        except AirflowNotFoundException:
            return None
    if value is None:
        return None
    text = str(value)
    if text:
        mask_secret(text)
    return text


def _supplied(task: BaseOperator, params: Any, missing: list[EnvVariable]) -> Json:
    """The env_values param, checked; warns about secrets given as literal values."""
    supplied = dict(RunOptions.of_params(params).env_values)
    with engine_errors():
        parsed = checks.parse_supplied(supplied)
    for var in missing:
        if var.secret and isinstance(parsed.get(var.name), str):
            mask_secret(str(parsed[var.name]), var.name)
    for name in checks.literal_secrets(missing, parsed):
        task.log.warning(
            "Secret %s was given as a literal value in env_values: it stays in this run's conf in "
            "Airflow's metadata database and is shown with the run. Give a reference instead, e.g. "
            '{"%s": {"variable": "<Airflow Variable key>"}} or {"connection": "<conn id>"}',
            name,
            name,
        )
    return supplied


class EnvCheckOperator(BaseOperator):
    """Stop when the target is the file's own source database, or the source and target apps are
    configured differently or run different versions (unless ``params.allow_version_mismatch``);
    list missing env variables.

    :param migration_file: URI or store file name of the migration file (templated)
    :param target_conn_id: Airflow connection of the target database (templated)
    """

    template_fields: Sequence[str] = ("migration_file", "target_conn_id")

    def __init__(self, *, migration_file: str, target_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.migration_file = migration_file
        self.target_conn_id = target_conn_id

    def execute(self, context: Context) -> Json:
        with engine_errors():
            env = environment(self.target_conn_id)
            manifest = migration_manifest(self.migration_file)
            checks.refuse_own_source(
                manifest,
                identity_of(env.dsn),
                file=self.migration_file,
                target_name=f"connection {self.target_conn_id!r}",
            )
            checks.check_settings(manifest, env.app_env)
            if env.app is not None:
                env.app.validate(self.target_conn_id)
            try:
                versions = checks.check_versions(
                    manifest,
                    env.dsn,
                    env.app_env,
                    allow_mismatch=RunOptions.of_params(context["params"]).allow_version_mismatch,
                )
            except EnvironmentMismatchError as exc:
                self.log.error("Version check: %s", exc)
                raise
            missing = checks.missing_variables(manifest, env.dsn, env.app_env)
        if versions.matches:
            self.log.info(
                "Versions match: application %s, and every plugin enabled on both sides",
                versions.source_version or "(none)",
            )
        else:
            self.log.warning(
                "Versions differ (allowed by allow_version_mismatch): %s", versions.describe()
            )
        settings = manifest.source.app_settings
        self.log.info(
            "App settings match: %s",
            ", ".join(f"{k}={v!r}" for k, v in settings.items()) or "none checked",
        )
        for var in missing:
            self.log.warning(
                "The target lacks %s variable %s%s",
                var.type,
                var.name,
                " (referenced by the migrated configuration)" if var.referenced else "",
            )
        return {
            "settings": settings,
            "missing_env": [v.model_dump() for v in missing],
            "versions": versions.model_dump(),
        }


def missing_plugins(migration_file: str, target_conn_id: str) -> list[Plugin]:
    """Plugins enabled in the migration file's source but not in the target."""
    with engine_errors():
        env = environment(target_conn_id)
        manifest = migration_manifest(migration_file)
        return checks.missing_plugins(manifest, env.dsn, env.app_env)


def _plugin_lines(missing: list[Plugin]) -> str:
    return "\n".join(f"- **{p.name}** {p.version} ({p.package})" for p in missing)


class EnvValuesOperator(HITLOperator):
    """Get values for the env variables the target lacks: from ``params.env_values``, else a prompt.

    Secret values are masked in logs, encrypted for the target app at once, and never returned
    in clear (the XCom holds only what the app stores: ciphertext for secrets).

    When plugins are missing in the target too and ``on_missing_plugins`` is ``ask``, the same
    question asks about them (options: continue with these values, or stop): one dialog under
    Required actions instead of two. ``plugin_check`` then takes that answer (``plugins`` in
    this task's outcome) and does not ask again.

    :param migration_file: URI or store file name of the migration file (templated)
    :param target_conn_id: Airflow connection of the target database (templated)
    :param env_check: ``env_check``'s outcome (its output; lists the missing variables)
    """

    template_fields: Sequence[str] = ("migration_file", "target_conn_id", "env_check")

    def __init__(
        self, *, migration_file: str, target_conn_id: str, env_check: Any = None, **kwargs: Any
    ):
        super().__init__(subject="Missing environment variables", options=[PROVIDE], **kwargs)
        self.migration_file = migration_file
        self.target_conn_id = target_conn_id
        self.env_check = env_check

    def _missing(self, context: Context) -> list[EnvVariable]:
        found = self.env_check or {}
        return [EnvVariable(**v) for v in found.get("missing_env", [])]

    def _finish(
        self, context: Context, values: dict[str, str], source: str, user: str | None
    ) -> Json:
        missing = self._missing(context)
        for var in missing:
            if var.secret and var.name in values:
                mask_secret(values[var.name], var.name)
        with engine_errors():
            env = environment(self.target_conn_id)
            manifest = migration_manifest(self.migration_file)
            rows = checks.stored_values(manifest, missing, values, env.app_env)
        for name, kind, stored in rows:
            if kind == "secret":
                mask_secret(stored, name)
        self.log.info(
            "Values for %s supplied (%s%s)",
            ", ".join(n for n, _, _ in rows),
            source,
            f" by {user}" if user else "",
        )
        return {"rows": [list(r) for r in rows], "source": source, "answered_by": user}

    def execute(self, context: Context) -> Any:
        missing = self._missing(context)
        if not missing:
            self.log.info("The target has every environment variable the source has")
            return {"rows": [], "source": "none needed", "answered_by": None}
        params = context["params"]
        supplied = _supplied(self, params, missing)
        with engine_errors():
            values, still = checks.resolve_values(missing, supplied, _lookup)
        if not still:
            return self._finish(context, values, "env_values param", None)
        names = ", ".join(f"{v.name} ({v.type})" for v in still)
        if is_dry_run(context):
            self.log.warning("Dry run: the target lacks %s; not asked, nothing is written", names)
            return self._finish(context, values, "env_values param (dry run)", None) | {
                "not_asked": [v.name for v in still]
            }
        if RunOptions.of_params(params).on_missing_env == "fail":
            raise AirflowFailException(
                f"The target lacks environment variable(s) {names}; give their values in the env_values "
                "param (an object NAME -> value), or set on_missing_env to 'ask' to be prompted"
            )
        self.params = ParamsDict(
            {
                v.name: Param(
                    "",
                    type="string",
                    title=v.name,
                    description=(
                        "Secret: stored encrypted with the target app's key. "
                        if v.secret
                        else "Plain value. "
                    )
                    + ("Referenced by the migrated configuration." if v.referenced else ""),
                )
                for v in still
            }
        )
        self.body = (
            "The target application lacks these environment variables, which the source has:\n\n"
            + "\n".join(
                f"- **{v.name}** ({v.type}){' — referenced by the migrated configuration' if v.referenced else ''}"
                for v in still
            )
            + "\n\nEnter a value for each to continue. Secrets are encrypted for the target app and never logged."
        )
        plugins = self._plugins_to_ask(context)
        if plugins:
            self.options = [PROVIDE, STOP]
            self.body += (
                "\n\nThese plugins are enabled in the source but not in the target:\n\n"
                + _plugin_lines(plugins)
                + f"\n\n**{PROVIDE}** also goes on without them (configuration that depends on "
                f"them may not work until they are installed); **{STOP}** stops here, nothing "
                "written."
            )
        self.log.info("Waiting for values of %s (Required actions in the Airflow UI)", names)
        context["ti"].xcom_push(
            key="asked",
            value={
                "names": [v.name for v in still],
                "given": sorted(values),
                "plugins": [p.name for p in plugins],
            },
        )
        return super().execute(context)

    def _plugins_to_ask(self, context: Context) -> list[Plugin]:
        """The missing plugins to ask about with the values (``on_missing_plugins`` ask)."""
        if RunOptions.of_params(context["params"]).on_missing_plugins != "ask":
            return []
        return missing_plugins(self.migration_file, self.target_conn_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" in event:
            unanswered(self, event, "missing environment variables")
        answers = {
            k: str(v) for k, v in (event.get("params_input") or {}).items() if v not in (None, "")
        }
        missing = self._missing(context)
        for var in missing:
            if var.secret and var.name in answers:
                mask_secret(answers[var.name], var.name)
        supplied = _supplied(self, context["params"], missing)
        with engine_errors():
            values, still = checks.resolve_values(missing, {**supplied, **answers}, _lookup)
        user = responder(event)
        asked = context["ti"].xcom_pull(task_ids=self.task_id, key="asked") or {}
        if STOP in (event.get("chosen_options") or []):
            names = ", ".join(asked.get("plugins") or [])
            raise AirflowFailException(
                f"Stopped by {user or 'a user'}"
                + (f": plugins missing in the target ({names})" if names else "")
                + "; nothing was written"
            )
        if still:
            raise AirflowFailException(
                f"No value was given for {', '.join(v.name for v in still)}; the migration stops"
            )
        result = self._finish(context, values, "prompt", user)
        if asked.get("plugins"):  # answered with the values: plugin_check does not ask again
            plugins = missing_plugins(self.migration_file, self.target_conn_id)
            self.log.info(
                "%s chose to continue without %s",
                user or "A user",
                ", ".join(p.name for p in plugins),
            )
            result["plugins"] = {
                "missing": [p.model_dump() for p in plugins],
                "decision": "continue (prompt)",
                "decided_by": user,
            }
        return result


class PluginCheckOperator(HITLOperator, SkipMixin):
    """Compare enabled plugins; for missing ones warn, stop, or ask (``params.on_missing_plugins``).

    The last check before anything writes, so it also decides which of the following tasks would
    only skip themselves, and has the scheduler skip them (no task process): when the plan has
    no unit and no environment value is to be written, ``skip_when_idle`` (the lock, backup and
    writing tasks), so a run with nothing to apply ends right after the checks, with its log;
    otherwise ``backup_task`` when the run's ``skip_backup`` is set, and ``env_write_task`` when
    no environment value is to be written (not in a dry run: its env_write reports what it
    did not write). Why each was skipped goes to XCom (key ``task_ids.SKIP_NOTES_KEY``) for the
    run's log.
    """

    template_fields: Sequence[str] = ("migration_file", "target_conn_id", "report", "env_values")

    def __init__(
        self,
        *,
        migration_file: str,
        target_conn_id: str,
        skip_when_idle: Sequence[str] = (),
        backup_task: str | None = None,
        env_write_task: str | None = None,
        report: Any = None,
        env_values: Any = None,
        **kwargs: Any,
    ):
        super().__init__(
            subject="Plugins missing in the target", options=[CONTINUE, STOP], **kwargs
        )
        self.migration_file = migration_file
        self.target_conn_id = target_conn_id
        self.skip_when_idle = list(skip_when_idle)
        self.backup_task = backup_task
        self.env_write_task = env_write_task
        self.report = report  # plan's report (XCom form of plan_report.PlanReport)
        self.env_values = env_values  # env_values' outcome: the rows to write

    def _skips(self, context: Context) -> dict[str, str]:
        """The following tasks that would only skip themselves: task id -> why."""
        from migration_manager.plan_report import PlanReport

        report = PlanReport.pulled(self.report)
        rows = (self.env_values or {}).get("rows")
        if self.skip_when_idle and report and not report.units and not rows:
            return dict.fromkeys(self.skip_when_idle, NOTHING_TO_APPLY)
        skips: dict[str, str] = {}
        if self.backup_task and RunOptions.of_params(context["params"]).skip_backup:
            skips[self.backup_task] = NO_BACKUP
        if self.env_write_task and not rows and not is_dry_run(context):
            skips[self.env_write_task] = NOTHING_TO_WRITE
        return skips

    def _done(self, context: Context, result: Json) -> Json:
        skips = self._skips(context)
        if not skips:
            return result
        for task_id, why in skips.items():
            self.log.info("Skipping %s: %s", task_id, why)
        ti = context["ti"]
        ti.xcom_push(key=task_ids.SKIP_NOTES_KEY, value=skips)  # for the run's log
        ti.xcom_push(key="return_value", value=result)  # skipping ends execute without a return
        # ... and without the post_execute hook: the step's end for the run's log is pushed here
        from migration_manager.airflow.run_log import step_succeeded

        step_succeeded(context, result)
        self.skip(ti, [self.dag.get_task(t) for t in skips])
        return result

    def _missing(self) -> list[Plugin]:
        return missing_plugins(self.migration_file, self.target_conn_id)

    def execute(self, context: Context) -> Any:
        missing = self._missing()
        listed = [p.model_dump() for p in missing]
        if not missing:
            self.log.info("Every plugin enabled in the source is enabled in the target")
            return self._done(
                context, {"missing": [], "decision": "none needed", "decided_by": None}
            )
        names = ", ".join(f"{p.name} {p.version}".strip() for p in missing)
        mode: str = RunOptions.of_params(context["params"]).on_missing_plugins
        if is_dry_run(context) and mode == "ask":
            mode = "continue"  # nothing is written: report, do not ask
        self.log.warning("Plugins enabled in the source but not in the target: %s", names)
        if mode == "fail":
            raise AirflowFailException(
                f"Plugins enabled in the source are missing in the target: {names}. Install and enable them "
                "in the target app, or set on_missing_plugins to 'continue' or 'ask'"
            )
        answered = (self.env_values or {}).get("plugins")
        if mode == "ask" and answered:  # asked with the environment variables (env_values)
            self.log.info("Answered with the environment variables by %s", answered["decided_by"])
            return self._done(context, {**answered, "missing": listed})
        if mode == "continue":
            return self._done(
                context,
                {
                    "missing": listed,
                    "decision": "continue (on_missing_plugins=continue)",
                    "decided_by": None,
                },
            )
        self.body = (
            "These plugins are enabled in the source but not in the target:\n\n"
            + _plugin_lines(missing)
            + "\n\nConfiguration that depends on them may not work in the target until they are installed."
        )
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" in event:
            unanswered(self, event, "missing plugins")
        chosen = list(event.get("chosen_options") or [])
        self.validate_chosen_options(chosen)
        user = responder(event)
        missing = [p.model_dump() for p in self._missing()]
        if STOP in chosen:
            raise AirflowFailException(
                f"Stopped by {user or 'a user'}: plugins missing in the target ({', '.join(p['name'] for p in missing)})"
            )
        self.log.info(
            "%s chose to continue without %s",
            user or "A user",
            ", ".join(p["name"] for p in missing),
        )
        return self._done(
            context, {"missing": missing, "decision": "continue (prompt)", "decided_by": user}
        )
