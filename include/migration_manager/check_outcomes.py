"""The checks' outcomes (env_check, env_values, plugin_check, destructive_check, env_write,
app_restart), as the run record keeps them under ``checks``: see :mod:`step_outcomes`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue, model_validator

from migration_manager.manifest import Plugin, Variable
from migration_manager.step_kinds import Part, StepKind, StepOutcome, items


class VersionDifference(Part):
    """An application or plugin version that differs between source and target."""

    name: str  # "application" or a plugin's name
    source: str | None = None
    target: str | None = None


class VersionCheck(Part):
    """The source's and the target's application version and enabled plugins' versions."""

    source_version: str | None = None
    target_version: str | None = None
    differences: list[VersionDifference] = []
    allowed: bool = False  # allow_version_mismatch was set

    @property
    def matches(self) -> bool:
        return not self.differences

    def describe(self) -> str:
        """The application and plugin versions that differ between source and target."""
        return "; ".join(
            f"{d.name}: source {d.source or '(none)'}, target {d.target or '(none)'}"
            for d in self.differences
        )


class EnvCheck(StepOutcome):
    kind = StepKind.ENV_CHECK

    settings: dict[str, JsonValue] = {}
    missing_env: list[Variable] = []  # the source's variables the target lacks
    versions: VersionCheck | None = None

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        out: dict[str, Any] = {
            "settings": dict(v.get("settings") or {}),
            "missing_env": [
                {
                    "name": m.get("name"),
                    "type": m.get("type"),
                    "referenced": bool(m.get("referenced")),
                }
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
                    for d in items(versions.get("differences"))
                ],
                "allowed": bool(versions.get("allowed")),
            }
        return out

    def describe(self) -> str:
        missing = ", ".join(f"{m.name} ({m.type})" for m in self.missing_env)
        text = "settings match"
        if self.versions:
            text += (
                f"; versions differ ({self.versions.describe()}), allowed"
                if self.versions.differences
                else f"; versions match ({self.versions.source_version or 'none'})"
            )
        return text + (f"; the target lacks {missing}" if missing else "")


class Named(Part):
    name: str
    type: str


class EnvValues(StepOutcome):
    """The values supplied for missing variables: by name and type; the value is never kept."""

    kind = StepKind.ENV_VALUES

    supplied: list[Named] = []
    source: str | None = None
    answered_by: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        if "supplied" in v:
            supplied = [
                {"name": s.get("name"), "type": s.get("type")} for s in items(v["supplied"])
            ]
        else:  # the step's rows are [name, kind, stored value]: the stored value is never kept
            rows = [r for r in v.get("rows") or () if isinstance(r, (list, tuple)) and len(r) >= 2]
            supplied = [{"name": str(r[0]), "type": str(r[1])} for r in rows]
        return {
            "supplied": supplied,
            "source": v.get("source"),
            "answered_by": v.get("answered_by"),
        }

    def describe(self) -> str:
        supplied = ", ".join(f"{s.name} ({s.type})" for s in self.supplied)
        if not supplied:
            return "no value needed"
        by = f" by {self.answered_by}" if self.answered_by else ""
        return f"{supplied} from the {self.source}{by}"


class PluginCheck(StepOutcome):
    kind = StepKind.PLUGIN_CHECK

    missing: list[Plugin] = []  # enabled in the source, not in the target
    decision: str | None = None
    decided_by: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        return {
            "missing": [
                {"name": p.get("name"), "version": p.get("version"), "package": p.get("package")}
                for p in items(v.get("missing"))
            ],
            "decision": v.get("decision"),
            "decided_by": v.get("decided_by"),
        }

    def describe(self) -> str:
        missing = ", ".join(str(p.name) for p in self.missing)
        if not missing:
            return "every plugin enabled"
        return _decided(f"missing {missing}", self.decision, self.decided_by)


def _decided(what: str, decision: str | None, decided_by: str | None) -> str:
    """What was asked, and what was decided (by whom)."""
    return f"{what}: {decision}" + (f" by {decided_by}" if decided_by else "")


class DestructiveCheck(StepOutcome):
    kind = StepKind.DESTRUCTIVE_CHECK

    parts: list[str] = []
    max_delete_ratio: float | None = None
    mode: str | None = None
    decision: str | None = None
    decided_by: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        keys = ("max_delete_ratio", "mode", "decision", "decided_by")
        return {"parts": [str(p) for p in v.get("parts") or ()]} | {k: v.get(k) for k in keys}

    def describe(self) -> str:
        parts = "; ".join(self.parts)
        if not parts:
            return "not destructive"
        return _decided(parts, self.decision, self.decided_by)


class EnvWrite(StepOutcome):
    kind = StepKind.ENV_WRITE

    written: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _kept(cls, v: Any) -> Any:
        return {"written": [str(n) for n in v.get("written") or ()]}

    def describe(self) -> str:
        written = ", ".join(self.written)
        return f"wrote {written}" if written else "nothing to write"


class AppRestart(StepOutcome):
    """The target app's restart after the migration or rollback: what ``app_control.restart`` returns,
    with when (``after``), or why no restart happened (``message``)."""

    kind = StepKind.APP_RESTART

    status: str | None = None  # "restarted", "restart needed", "not needed", ...
    after: str | None = None
    url: str | None = None
    went_down: bool | None = None
    seconds: float | None = None
    health: JsonValue = None
    message: str | None = None

    def describe(self) -> str:
        if self.status == "restarted":
            return (
                f"restarted {self.url} after the {self.after}; healthy after {self.seconds} s"
                + ("" if self.went_down else " (never seen down)")
            )
        if self.status == "restart needed":
            return f"RESTART THE TARGET APP: {self.message}"
        return str(self.status or "") + (f" ({self.message})" if self.message else "")
