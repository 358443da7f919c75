"""What each step of a run did, as the run record keeps it: an allow-list per kind of step.

A step's return value is summarised by its kind (:class:`StepKind`); values that are not listed
are not kept, and a step of no known kind has no outcome in the record. Environment variables
appear by name and type only, never their values. :func:`describe_outcome` puts an outcome in a
few words for the log and the run page.

The engine names the kinds; which task of a DAG is which kind is the Airflow adapter's business
(``migration_manager.airflow.run_log.STEP_KINDS``). In ``migration.json`` the kind's value is
the step's ``task_id`` and the key of its outcome under ``checks``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from migration_manager.redaction import redact
from migration_manager.run_record import JsonObject


class StepKind(StrEnum):
    """The kinds of step a run records an outcome for."""

    CREATE_FILE = "create_migration_file"
    ENV_CHECK = "env_check"
    PLAN = "plan"
    ENV_VALUES = "env_values"
    PLUGIN_CHECK = "plugin_check"
    DESTRUCTIVE_CHECK = "destructive_check"
    BACKUP = "backup"
    ENV_WRITE = "env_write"
    APPLY_UNIT = "apply_table"
    ROLLBACK = "rollback"
    RESTORE = "restore"
    APP_RESTART = "app_restart"

    @classmethod
    def of(cls, name: str | None) -> StepKind | None:
        """The kind a recorded step's name stands for; None for a step of no known kind."""
        if name is None:
            return None
        try:
            return cls(name)
        except ValueError:
            return None


# the checks' outcomes, as the record's ``checks`` holds them
CHECK_KINDS = (
    StepKind.ENV_CHECK,
    StepKind.ENV_VALUES,
    StepKind.PLUGIN_CHECK,
    StepKind.DESTRUCTIVE_CHECK,
    StepKind.ENV_WRITE,
    StepKind.APP_RESTART,
)


def _env_check(v: Mapping[str, Any]) -> JsonObject:
    out: JsonObject = {
        "settings": dict(v.get("settings") or {}),
        "missing_env": [
            {"name": m.get("name"), "type": m.get("type"), "referenced": bool(m.get("referenced"))}
            for m in v.get("missing_env") or ()
        ],
    }
    versions = v.get("versions")
    if isinstance(versions, Mapping):
        out["versions"] = {
            "source_version": versions.get("source_version"),
            "target_version": versions.get("target_version"),
            "differences": [
                {"name": d.get("name"), "source": d.get("source"), "target": d.get("target")}
                for d in versions.get("differences") or ()
                if isinstance(d, Mapping)
            ],
            "allowed": bool(versions.get("allowed")),
        }
    return out


def _app_restart(v: Mapping[str, Any]) -> JsonObject:
    keys = ("status", "after", "url", "went_down", "seconds", "health", "message")
    return {k: v.get(k) for k in keys if k in v}


def _env_values(v: Mapping[str, Any]) -> JsonObject:
    # rows are [name, kind, stored value]: the stored value is never recorded
    rows = [r for r in v.get("rows") or () if isinstance(r, (list, tuple)) and len(r) >= 2]
    return {
        "supplied": [{"name": str(r[0]), "type": str(r[1])} for r in rows],
        "source": v.get("source"),
        "answered_by": v.get("answered_by"),
    }


def _plugin_check(v: Mapping[str, Any]) -> JsonObject:
    return {
        "missing": [
            {"name": p.get("name"), "version": p.get("version"), "package": p.get("package")}
            for p in v.get("missing") or ()
            if isinstance(p, Mapping)
        ],
        "decision": v.get("decision"),
        "decided_by": v.get("decided_by"),
    }


def _destructive(v: Mapping[str, Any]) -> JsonObject:
    return {
        "parts": [str(p) for p in v.get("parts") or ()],
        "max_delete_ratio": v.get("max_delete_ratio"),
        "mode": v.get("mode"),
        "decision": v.get("decision"),
        "decided_by": v.get("decided_by"),
    }


def _env_write(v: Mapping[str, Any]) -> JsonObject:
    return {"written": [str(n) for n in v.get("written") or ()]}


def _backup(v: Mapping[str, Any]) -> JsonObject:
    keys = ("backup_id", "uri", "target_key", "database", "size", "sha256", "tables", "rows")
    return {k: v.get(k) for k in keys if k in v}


def _rollback(v: Mapping[str, Any]) -> JsonObject:
    keys = (
        "status",
        "backup_id",
        "failed_units",
        "reason",
        "restore_by_hand",
        "tables_verified",
        "seconds",
    )
    return {k: v.get(k) for k in keys if k in v}


def _unit(v: Mapping[str, Any]) -> JsonObject:
    return {
        "unit": v.get("unit"),
        "seconds": v.get("seconds"),
        "tables": [
            {
                k: t.get(k)
                for k in ("table", "rule", "status", "inserted", "updated", "deleted", "unchanged")
            }
            | {"ddl": len(t.get("ddl") or ())}
            for t in v.get("tables") or ()
        ],
    }


def _plan(v: Any) -> JsonObject:
    """The plan's report (or its return value, the units): units, and the differences found."""
    units = v.get("units") if isinstance(v, Mapping) else v
    out: JsonObject = {
        "units": [u.get("label") or u.get("id") for u in units or [] if isinstance(u, Mapping)]
    }
    if isinstance(v, Mapping):
        out["differences"] = [
            {
                "table": p.get("table"),
                "rule": p.get("rule"),
                "changes": list(p.get("changes") or []),
            }
            for p in v.get("pending") or []
            if isinstance(p, Mapping) and p.get("changes")
        ]
        out["unchanged"] = len(v.get("quiet_tables") or [])
        # tables changed in the target since the last migration, whose rows the rule replaces
        changed = [c for c in v.get("changed_in_prod") or [] if isinstance(c, Mapping)]
        if changed:
            out["changed_in_prod"] = [str(c.get("table")) for c in changed]
    return out


def _created(v: Any) -> JsonObject:
    return {"migration_file": redact(str(v))} if v else {}


def _restore(v: Mapping[str, Any]) -> JsonObject:
    keys = ("backup_id", "mode", "database", "tables_verified", "seconds", "status")
    return {k: v.get(k) for k in keys if k in v}


OUTCOMES: dict[StepKind, Callable[[Any], JsonObject]] = {
    StepKind.CREATE_FILE: _created,
    StepKind.ENV_CHECK: _env_check,
    StepKind.PLAN: _plan,
    StepKind.ENV_VALUES: _env_values,
    StepKind.PLUGIN_CHECK: _plugin_check,
    StepKind.DESTRUCTIVE_CHECK: _destructive,
    StepKind.BACKUP: _backup,
    StepKind.ENV_WRITE: _env_write,
    StepKind.APPLY_UNIT: _unit,
    StepKind.ROLLBACK: _rollback,
    StepKind.RESTORE: _restore,
    StepKind.APP_RESTART: _app_restart,
}


def outcome_of(kind: StepKind | None, value: Any) -> JsonObject | None:
    """What a step's return value says, for the log; None for a step whose outcome is not known."""
    summarise = OUTCOMES.get(kind) if kind is not None else None
    if summarise is None or value is None:
        return None
    if not isinstance(value, (Mapping, list, str)):
        return None
    try:
        return summarise(value)
    except (AttributeError, TypeError, ValueError):
        return None


def describe_outcome(step: str | None, outcome: Mapping[str, Any] | None) -> str:
    """A step's outcome in a few words, for the Process view and the log.

    ``step`` is the step's kind (a recorded step's ``task_id``)."""
    if not outcome:
        return ""
    o = outcome
    kind = StepKind.of(step)
    if kind is StepKind.APPLY_UNIT:
        return "; ".join(
            f"{t.get('table')}: +{t.get('inserted', 0)} ~{t.get('updated', 0)} "
            f"-{t.get('deleted', 0)} ={t.get('unchanged', 0)} rows, {t.get('ddl', 0)} DDL"
            for t in o.get("tables") or []
        )
    if kind is StepKind.ENV_CHECK:
        missing = ", ".join(f"{m['name']} ({m['type']})" for m in o.get("missing_env") or [])
        text = "settings match"
        versions = o.get("versions")
        if versions:
            text += (
                f"; versions differ ({version_text(versions)}), allowed"
                if versions.get("differences")
                else f"; versions match ({versions.get('source_version') or 'none'})"
            )
        return text + (f"; the target lacks {missing}" if missing else "")
    if kind is StepKind.APP_RESTART:
        return restart_text(o)
    if kind is StepKind.ENV_VALUES:
        supplied = ", ".join(f"{v['name']} ({v['type']})" for v in o.get("supplied") or [])
        if not supplied:
            return "no value needed"
        by = f" by {o['answered_by']}" if o.get("answered_by") else ""
        return f"{supplied} from the {o.get('source')}{by}"
    if kind is StepKind.PLUGIN_CHECK:
        missing = ", ".join(str(p.get("name")) for p in o.get("missing") or [])
        if not missing:
            return "every plugin enabled"
        by = f" by {o['decided_by']}" if o.get("decided_by") else ""
        return f"missing {missing}: {o.get('decision')}{by}"
    if kind is StepKind.DESTRUCTIVE_CHECK:
        parts = "; ".join(o.get("parts") or [])
        if not parts:
            return "not destructive"
        by = f" by {o['decided_by']}" if o.get("decided_by") else ""
        return f"{parts}: {o.get('decision')}{by}"
    if kind is StepKind.ENV_WRITE:
        written = ", ".join(o.get("written") or [])
        return f"wrote {written}" if written else "nothing to write"
    if kind is StepKind.PLAN:
        units = o.get("units") or []
        text = f"{len(units)} unit(s) to apply"
        if o.get("differences"):
            text += f"; structure differences in {len(o['differences'])} table(s)"
        if o.get("changed_in_prod"):
            text += "; changed in prod since the last migration: " + ", ".join(o["changed_in_prod"])
        return text
    if kind is StepKind.BACKUP:
        return f"{o.get('backup_id')}: {o.get('tables')} tables, {o.get('rows')} rows"
    if kind is StepKind.ROLLBACK:
        return str(o.get("status") or "") + (f" ({o['reason']})" if o.get("reason") else "")
    if kind is StepKind.CREATE_FILE:
        return str(o.get("migration_file") or "").rsplit("/", 1)[-1]
    return ", ".join(f"{k}={v}" for k, v in o.items())


def version_text(versions: Mapping[str, Any]) -> str:
    """The application and plugin versions that differ between source and target."""
    return "; ".join(
        f"{d.get('name')}: source {d.get('source') or '(none)'}, target {d.get('target') or '(none)'}"
        for d in versions.get("differences") or []
    )


def restart_text(o: Mapping[str, Any]) -> str:
    """What became of the target app's restart."""
    status = o.get("status")
    if status == "restarted":
        return (
            f"restarted {o.get('url')} after the {o.get('after')}; healthy after {o.get('seconds')} s"
            + ("" if o.get("went_down") else " (never seen down)")
        )
    if status == "restart needed":
        return f"RESTART THE TARGET APP: {o.get('message')}"
    return str(status or "") + (f" ({o['message']})" if o.get("message") else "")
