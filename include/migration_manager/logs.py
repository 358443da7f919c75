"""A migration run's log: ``migration.json``, ``migration.log``, ``schema.sql`` and ``data.sql``.

Built from plain data (the plan's report, the units' results, one record per step, the checks'
and the backup's outcomes), so it is tested without Airflow. The Airflow task ``collect_logs``
gathers that data and calls :func:`build_record` and :func:`write_files`.

- ``migration.json``: the whole record (format ``migration-manager-log`` version 1).
- ``migration.log``: the same as readable text.
- ``schema.sql``: every DDL statement executed, in order, grouped by unit and table, runnable
  as a script (``psql -v ON_ERROR_STOP=1 -f schema.sql``).
- ``data.sql``: the data statements' shapes (staging, COPY, merge, sequences), never row values.

**Secret values never appear.** Step outcomes are summarised by an allow-list per step (an
unknown step's return value is not recorded), environment variables appear by name and type
only, run parameters are recorded except ``env_values``' values, and every text is scrubbed of
credentials in URLs and connection strings.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from migration_manager.archive import MANIFEST_SUM, ArchiveReader, Openable
from migration_manager.errors import ArchiveError
from migration_manager.report import format_summary
from migration_manager.signing import Signature, TrustedKey

LOG_FORMAT = "migration-manager-log"
LOG_VERSION = 1
RECORD = "migration.json"
LOG = "migration.log"
SCHEMA_SQL = "schema.sql"
DATA_SQL = "data.sql"
SUMMARY = "summary.json"
FILES = (RECORD, LOG, SCHEMA_SQL, DATA_SQL)

SUCCESS = "success"
FAILED = "failed"
# Airflow task states that mean "did not succeed" (a skipped step is not a failure).
_FAILED_STATES = frozenset({"failed", "upstream_failed"})
_CHUNK = 1 << 20
_UNSAFE_PATH = re.compile(r"[^A-Za-z0-9._-]")

# user:password@ in URLs; password=... in key/value connection strings and JSON-ish text
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@"
)
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token)\b[\"']?\s*[=:]\s*)(?P<q>['\"]?)[^'\"\s,;}]+(?P=q)",
    re.IGNORECASE,
)


class Writable(Protocol):
    """A folder in the store: ``pathlib.Path`` or Airflow's ``ObjectStoragePath``."""

    def __truediv__(self, other: str) -> Any: ...

    def mkdir(self, *args: Any, **kwargs: Any) -> Any: ...


def safe_component(value: str) -> str:
    """A run id or migration id as one path component (``manual__2026-01-01T00:00:00+00:00`` -> ``manual__2026-01-01T00_00_00_00_00``)."""
    safe = _UNSAFE_PATH.sub("_", value or "").strip(".")
    return safe or "_"


def scrub(text: str) -> str:
    """Remove credentials from text: ``scheme://user:pw@`` and ``password=...`` lose the secret."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
    return _KV_PASSWORD.sub(r"\g<key>\g<q>***\g<q>", text)


def utc_iso(value: datetime | str | None) -> str | None:
    """An aware datetime (or ISO text) as ISO 8601 in UTC, to the millisecond; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO time to another (never negative); None when either is unknown."""
    a, b = _parse(start), _parse(end)
    if a is None or b is None:
        return None
    return round(max((b - a).total_seconds(), 0.0), 3)


@dataclass(frozen=True)
class Step:
    """One task instance of the run: what it was, how it ended, when, which attempt, its outcome."""

    task_id: str
    status: str  # Airflow's task state: success, failed, skipped, upstream_failed, ...
    map_index: int = -1
    label: str | None = None  # the map index's name (apply_table: the unit's tables)
    start: str | None = None
    end: str | None = None
    attempt: int | None = None
    outcome: Mapping[str, Any] | None = None
    error: str | None = None
    note: str | None = None  # why a step was skipped, and the like

    @property
    def name(self) -> str:
        if self.map_index < 0:
            return self.task_id
        return f"{self.task_id}[{self.label or self.map_index}]"

    @property
    def seconds(self) -> float | None:
        return _between(self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = dict(self.outcome) if self.outcome is not None else None
        d["error"] = scrub(self.error) if self.error else None
        d["name"] = self.name
        d["seconds"] = self.seconds
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Step:
        return cls(
            task_id=str(d["task_id"]),
            status=str(d.get("status") or "unknown"),
            map_index=int(d.get("map_index", -1) if d.get("map_index") is not None else -1),
            label=d.get("label"),
            start=utc_iso(d.get("start")),
            end=utc_iso(d.get("end")),
            attempt=int(d["attempt"]) if d.get("attempt") is not None else None,
            outcome=d.get("outcome"),
            error=scrub(str(d["error"])) if d.get("error") else None,
            note=scrub(str(d["note"])) if d.get("note") else None,
        )


# --- what each step's outcome says (an allow-list: values that are not listed are not kept) ---


def _names(items: Iterable[Mapping[str, Any]] | None) -> list[str]:
    return [str(i.get("name")) for i in items or () if isinstance(i, Mapping)]


def _env_check(v: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
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


def _app_restart(v: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("status", "after", "url", "went_down", "seconds", "health", "message")
    return {k: v.get(k) for k in keys if k in v}


def _env_values(v: Mapping[str, Any]) -> dict[str, Any]:
    # rows are [name, kind, stored value]: the stored value is never recorded
    rows = [r for r in v.get("rows") or () if isinstance(r, (list, tuple)) and len(r) >= 2]
    return {
        "supplied": [{"name": str(r[0]), "type": str(r[1])} for r in rows],
        "source": v.get("source"),
        "answered_by": v.get("answered_by"),
    }


def _plugin_check(v: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "missing": [
            {"name": p.get("name"), "version": p.get("version"), "package": p.get("package")}
            for p in v.get("missing") or ()
            if isinstance(p, Mapping)
        ],
        "decision": v.get("decision"),
        "decided_by": v.get("decided_by"),
    }


def _destructive(v: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "parts": [str(p) for p in v.get("parts") or ()],
        "max_delete_ratio": v.get("max_delete_ratio"),
        "mode": v.get("mode"),
        "decision": v.get("decision"),
        "decided_by": v.get("decided_by"),
    }


def _env_write(v: Mapping[str, Any]) -> dict[str, Any]:
    return {"written": [str(n) for n in v.get("written") or ()]}


def _backup(v: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("backup_id", "uri", "target_key", "database", "size", "sha256", "tables", "rows")
    return {k: v.get(k) for k in keys if k in v}


def _rollback(v: Mapping[str, Any]) -> dict[str, Any]:
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


def _unit(v: Mapping[str, Any]) -> dict[str, Any]:
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


def _plan(v: Any) -> dict[str, Any]:
    """The plan's report (or its return value, the units): units, and the differences found."""
    units = v.get("units") if isinstance(v, Mapping) else v
    out: dict[str, Any] = {
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


def _created(v: Any) -> dict[str, Any]:
    return {"migration_file": scrub(str(v))} if v else {}


def _restore(v: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("backup_id", "mode", "database", "tables_verified", "seconds", "status")
    return {k: v.get(k) for k in keys if k in v}


OUTCOMES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "create_migration_file": _created,
    "env_check": _env_check,
    "plan": _plan,
    "env_values": _env_values,
    "plugin_check": _plugin_check,
    "destructive_check": _destructive,
    "backup": _backup,
    "env_write": _env_write,
    "apply_table": _unit,
    "rollback": _rollback,
    "restore": _restore,
    "app_restart": _app_restart,
}


def outcome_of(task_id: str, value: Any) -> dict[str, Any] | None:
    """What a step's return value says, for the log; None for a step whose outcome is not known."""
    summarise = OUTCOMES.get(task_id)
    if summarise is None or value is None:
        return None
    if not isinstance(value, (Mapping, list, str)):
        return None
    try:
        return summarise(value)
    except (AttributeError, TypeError, ValueError):
        return None


def describe_outcome(task_id: str, outcome: Mapping[str, Any] | None) -> str:
    """A step's outcome in a few words, for the Process view and the log."""
    if not outcome:
        return ""
    o = outcome
    if task_id == "apply_table":
        return "; ".join(
            f"{t.get('table')}: +{t.get('inserted', 0)} ~{t.get('updated', 0)} "
            f"-{t.get('deleted', 0)} ={t.get('unchanged', 0)} rows, {t.get('ddl', 0)} DDL"
            for t in o.get("tables") or []
        )
    if task_id == "env_check":
        missing = ", ".join(f"{m['name']} ({m['type']})" for m in o.get("missing_env") or [])
        text = "settings match"
        versions = o.get("versions")
        if versions:
            text += (
                f"; versions differ ({_version_text(versions)}), allowed"
                if versions.get("differences")
                else f"; versions match ({versions.get('source_version') or 'none'})"
            )
        return text + (f"; the target lacks {missing}" if missing else "")
    if task_id == "app_restart":
        return _restart_text(o)
    if task_id == "env_values":
        supplied = ", ".join(f"{v['name']} ({v['type']})" for v in o.get("supplied") or [])
        if not supplied:
            return "no value needed"
        by = f" by {o['answered_by']}" if o.get("answered_by") else ""
        return f"{supplied} from the {o.get('source')}{by}"
    if task_id == "plugin_check":
        missing = ", ".join(str(p.get("name")) for p in o.get("missing") or [])
        if not missing:
            return "every plugin enabled"
        by = f" by {o['decided_by']}" if o.get("decided_by") else ""
        return f"missing {missing}: {o.get('decision')}{by}"
    if task_id == "destructive_check":
        parts = "; ".join(o.get("parts") or [])
        if not parts:
            return "not destructive"
        by = f" by {o['decided_by']}" if o.get("decided_by") else ""
        return f"{parts}: {o.get('decision')}{by}"
    if task_id == "env_write":
        written = ", ".join(o.get("written") or [])
        return f"wrote {written}" if written else "nothing to write"
    if task_id == "plan":
        units = o.get("units") or []
        text = f"{len(units)} unit(s) to apply"
        if o.get("differences"):
            text += f"; structure differences in {len(o['differences'])} table(s)"
        if o.get("changed_in_prod"):
            text += "; changed in prod since the last migration: " + ", ".join(o["changed_in_prod"])
        return text
    if task_id == "backup":
        return f"{o.get('backup_id')}: {o.get('tables')} tables, {o.get('rows')} rows"
    if task_id == "rollback":
        return str(o.get("status") or "") + (f" ({o['reason']})" if o.get("reason") else "")
    if task_id == "create_migration_file":
        return str(o.get("migration_file") or "").rsplit("/", 1)[-1]
    return ", ".join(f"{k}={v}" for k, v in o.items())


def _version_text(versions: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{d.get('name')}: source {d.get('source') or '(none)'}, target {d.get('target') or '(none)'}"
        for d in versions.get("differences") or []
    )


def _restart_text(o: Mapping[str, Any]) -> str:
    status = o.get("status")
    if status == "restarted":
        return (
            f"restarted {o.get('url')} after the {o.get('after')}; healthy after {o.get('seconds')} s"
            + ("" if o.get("went_down") else " (never seen down)")
        )
    if status == "restart needed":
        return f"RESTART THE TARGET APP: {o.get('message')}"
    return str(status or "") + (f" ({o['message']})" if o.get("message") else "")


def safe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The run's params for the log: ``env_values`` by name only (its values may be secrets)."""
    out: dict[str, Any] = {}
    for key, value in sorted(params.items()):
        if key == "env_values":
            out[key] = sorted(str(k) for k in (value or {})) if isinstance(value, Mapping) else []
        elif isinstance(value, (str, int, float, bool, type(None), list, dict)):
            out[key] = json.loads(scrub(json.dumps(value, default=str)))
    return out


# --- the migration file ------------------------------------------------------------------


def describe_signature(signature: Signature, *, allow_unsigned: bool) -> dict[str, Any]:
    """Who signed the file (the *trusted* key's name), or that it ran unsigned under allow_unsigned.

    ``shown`` is the line the log and the run page print; ``accepted`` says whether the run's
    tasks let the file through (signed by a trusted key, or ``allow_unsigned`` set).
    """
    accepted = signature.status == "verified" or allow_unsigned
    if signature.status == "verified":
        shown = f"signed by {signature.signer} (trusted key {signature.key_id})"
    elif allow_unsigned:
        shown = f"{signature.label}; accepted because allow_unsigned is set"
    else:
        shown = f"{signature.label}; not accepted (allow_unsigned is off)"
    return {
        **signature.to_dict(),
        "allow_unsigned": allow_unsigned,
        "accepted": accepted,
        "shown": scrub(shown),
    }


def describe_file(
    path: Openable,
    *,
    uri: str | None = None,
    keys: tuple[TrustedKey, ...] | None = None,
    allow_unsigned: bool = False,
) -> dict[str, Any]:
    """The migration file as the log names it: id, sha256 and size of the file, manifest checksum,
    and its signature checked against ``keys`` (the trusted keys; None: not checked).

    Reads the whole file once (streamed) for its sha256; a file that cannot be read is
    described by the error instead.
    """
    label = uri or str(path)
    info: dict[str, Any] = {"uri": scrub(label), "name": label.rstrip("/").rsplit("/", 1)[-1]}
    try:
        sha = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
            fh.seek(0)
            with ArchiveReader(fh, name=label) as reader:  # checks the format and manifest checksum
                manifest = reader.manifest
                signature = reader.signature_against(keys) if keys is not None else reader.signature
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                manifest_sha = zf.read(MANIFEST_SUM).decode("ascii").strip()
    except (ArchiveError, OSError, zipfile.BadZipFile) as exc:
        info["error"] = scrub(str(exc))
        return info
    source = manifest.get("source") or {}
    info |= {
        "id": manifest.get("id"),
        "sha256": sha.hexdigest(),
        "bytes": size,
        "manifest_sha256": manifest_sha,
        "created_at": manifest.get("created_at"),
        "tool_version": manifest.get("tool_version"),
        "profile": manifest.get("profile"),
        "tables": len(manifest.get("tables") or ()),
        "rows": sum(
            int((t.get("data") or {}).get("rows") or 0) for t in manifest.get("tables") or ()
        ),
        "source": {
            k: source.get(k)
            for k in ("database", "server_version", "app_version", "schema", "app_settings")
            if k in source
        },
        "signature": describe_signature(signature, allow_unsigned=allow_unsigned),
    }
    return info


# --- the record ---------------------------------------------------------------------------


def _step_sort_key(order: Mapping[str, int]) -> Callable[[Step], tuple[Any, ...]]:
    def key(s: Step) -> tuple[Any, ...]:
        # the DAG's order first (steps that never ran stay where they belong), then start time
        return (order.get(s.task_id, len(order)), s.start is None, s.start or "", s.map_index)

    return key


def _units(
    summary: Mapping[str, Any] | None, report: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The plan's units in apply order (tables referenced-first), with how each ended."""
    failed = {u["id"] for u in (summary or {}).get("failed_units", [])}
    return [
        {
            "id": u.get("id"),
            "label": u.get("label") or ", ".join(u.get("tables", [])),
            "tables": list(u.get("tables", [])),
            "map_index": i,
            "status": FAILED if u.get("id") in failed else SUCCESS,
        }
        for i, u in enumerate((report or {}).get("units", []))
    ]


def build_record(
    *,
    run: Mapping[str, Any],
    steps: Sequence[Step],
    report: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    migration_file: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    target: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    checks: Mapping[str, Any] | None = None,
    backup: Mapping[str, Any] | None = None,
    rollback: Mapping[str, Any] | None = None,
    task_order: Sequence[str] = (),
    ended_at: datetime | str | None = None,
    errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole record of a run (``migration.json``); a superset of the run summary.

    :param run: ``dag_id``, ``run_id``, ``run_type``, ``triggered_by``, ``start_date``
    :param steps: one :class:`Step` per task instance
    :param report: the plan's report (None when the run stopped before the plan)
    :param summary: :func:`migration_manager.report.summarize` of the report and unit results
    :param checks: the checks' return values by task id (summarised here, values dropped)
    """
    order = {t: i for i, t in enumerate(task_order)}
    steps = sorted(steps, key=_step_sort_key(order))
    failed_steps = [s for s in steps if s.status in _FAILED_STATES]
    status = SUCCESS
    if summary is None or summary.get("status") != SUCCESS or failed_steps:
        status = FAILED
    starts = [s.start for s in steps if s.start]
    ends = [s.end for s in steps if s.end]
    started_at = utc_iso(run.get("start_date")) or (min(starts) if starts else None)
    ended = utc_iso(ended_at) or (max(ends) if ends else None)
    seconds = _between(started_at, ended)
    all_errors = [scrub(e) for e in errors]
    all_errors += [
        f"{s.name}: {scrub(s.error)}" for s in steps if s.error and s.status in _FAILED_STATES
    ]
    file_info = dict(migration_file or {})
    migration_id = (
        (summary or {}).get("migration_id")
        or (report or {}).get("migration_id")
        or file_info.get("id")
    )
    summarised_checks = {
        task: outcome_of(task, value)
        for task, value in (checks or {}).items()
        if outcome_of(task, value) is not None
    }
    tables = list((summary or {}).get("tables", []))
    totals = dict(
        (summary or {}).get("totals")
        or {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0, "ddl": 0}
    )
    return {
        "format": LOG_FORMAT,
        "format_version": LOG_VERSION,
        "migration_id": migration_id,
        "status": status,
        "dag_id": run.get("dag_id"),
        "run_id": run.get("run_id"),
        "run_type": run.get("run_type"),
        "triggered_by": run.get("triggered_by"),
        "started_at": started_at,
        "ended_at": ended,
        "seconds": seconds,
        "migration_file": file_info or None,
        "source": dict(source or file_info.get("source") or {}) or None,
        "target": dict(target or {}) or None,
        "params": safe_params(params or {}),
        "steps": [s.to_dict() for s in steps],
        "checks": summarised_checks,
        "backup": _backup(backup) if backup else None,
        "rollback": _rollback(rollback) if rollback else None,
        "units": _units(summary, report),
        "differences": (_plan(report) if report else {}).get("differences", []),
        "tables": tables,
        "totals": totals,
        "failed_units": list((summary or {}).get("failed_units", [])),
        "warnings": [scrub(str(w)) for w in (summary or {}).get("warnings", [])],
        "errors": all_errors,
    }


def changed_rows(record: Mapping[str, Any]) -> int:
    t = record.get("totals") or {}
    return int(t.get("inserted", 0)) + int(t.get("updated", 0)) + int(t.get("deleted", 0))


# --- text renderings ----------------------------------------------------------------------


def _clock(value: str | None) -> str:
    parsed = _parse(value)
    return parsed.strftime("%H:%M:%S") if parsed else "-"


def _when(value: str | None) -> str:
    parsed = _parse(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "-"


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def endpoint(info: Mapping[str, Any] | None) -> str:
    """``conn_id: user@host:port/database`` (no password), or the database name alone."""
    if not info:
        return "-"
    where = info.get("database") or "?"
    if info.get("host"):
        port = f":{info['port']}" if info.get("port") else ""
        user = f"{info['user']}@" if info.get("user") else ""
        where = f"{user}{info['host']}{port}/{where}"
    conn = info.get("conn_id")
    return f"{conn}: {where}" if conn else str(where)


def _table(rows: list[tuple[str, ...]], right: int, *, left_last: bool = False) -> list[str]:
    """Columns padded to their widths: the first ``right`` (and, with ``left_last``, the last)
    left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1 if left_last else -1
    return [
        "  ".join(
            c.ljust(w) if i < right or i == last else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def _checks_lines(checks: Mapping[str, Any]) -> list[str]:
    lines = []
    env = checks.get("env_check")
    if env is not None:
        settings = ", ".join(f"{k}={v!r}" for k, v in (env.get("settings") or {}).items())
        lines.append(f"  App settings      match ({settings or 'none checked'})")
        versions = env.get("versions")
        if versions and versions.get("differences"):
            lines.append(
                f"  Versions          differ, allowed by allow_version_mismatch: {_version_text(versions)}"
            )
        elif versions:
            lines.append(
                f"  Versions          match (application {versions.get('source_version') or 'none'}, "
                "every plugin enabled on both sides)"
            )
        missing = env.get("missing_env") or []
        if missing:
            lines.append(
                "  Env variables     the target lacked "
                + ", ".join(f"{m['name']} ({m['type']})" for m in missing)
            )
        else:
            lines.append("  Env variables     the target had every variable the source has")
    values = checks.get("env_values")
    if values and values.get("supplied"):
        by = f" by {values['answered_by']}" if values.get("answered_by") else ""
        lines.append(
            "  Values supplied   "
            + ", ".join(f"{v['name']} ({v['type']})" for v in values["supplied"])
            + f" from the {values.get('source')}{by} (values not recorded)"
        )
    plugins = checks.get("plugin_check")
    if plugins is not None:
        if plugins.get("missing"):
            by = f" by {plugins['decided_by']}" if plugins.get("decided_by") else ""
            lines.append(
                "  Plugins           missing in the target: "
                + ", ".join(str(p["name"]) for p in plugins["missing"])
                + f"; decision: {plugins.get('decision')}{by}"
            )
        else:
            lines.append("  Plugins           every plugin enabled in the source is enabled")
    written = (checks.get("env_write") or {}).get("written")
    if written:
        lines.append("  Env written       " + ", ".join(written))
    restart = checks.get("app_restart")
    if restart is not None:
        lines.append("  App restart       " + _restart_text(restart))
    return lines


def format_log(record: Mapping[str, Any]) -> str:
    """``migration.log``: the record as text a person reads from top to bottom."""
    f = record.get("migration_file") or {}
    head = f"Migration {record.get('migration_id') or '(no migration file)'}: {str(record['status']).upper()}"
    if record.get("dry_run"):
        head += " (DRY RUN: every unit rolled back, nothing committed)"
    lines = [head, "=" * len(head)]
    trig = record.get("triggered_by") or "-"
    lines.append(
        f"Run         {record.get('run_id')} of {record.get('dag_id')} "
        f"({record.get('run_type') or '-'}, triggered by {trig})"
    )
    if f:
        if f.get("sha256"):
            detail = f"sha256 {f.get('sha256')}, {_size(f.get('bytes'))}"
            if f.get("created_at"):
                detail += f", created {f['created_at']}"
        else:
            detail = f"unreadable: {f.get('error')}"
        lines.append(f"File        {f.get('name')} ({detail})")
        if f.get("signature"):
            lines.append(f"Signature   {f['signature'].get('shown')}")
    source = record.get("source") or {}
    if source:
        extra = []
        if source.get("server_version"):
            extra.append(f"PostgreSQL {source['server_version']}")
        if source.get("app_version"):
            extra.append(f"app {source['app_version']}")
        lines.append(
            f"Source      {endpoint(source)}{' (' + ', '.join(extra) + ')' if extra else ''}"
        )
    lines.append(f"Target      {endpoint(record.get('target'))}")
    secs = record.get("seconds")
    lines.append(
        f"Started     {_when(record.get('started_at'))}; ended {_when(record.get('ended_at'))}"
        + (f" ({secs:.1f} s)" if isinstance(secs, (int, float)) else "")
    )
    backup = record.get("backup")
    if backup:
        lines.append(
            f"Backup      {backup.get('backup_id')} ({backup.get('tables')} tables, "
            f"{backup.get('rows')} rows, {_size(backup.get('size'))})"
        )
    else:
        lines.append("Backup      none taken")
    rollback = record.get("rollback")
    if rollback:
        lines.append(
            f"Rollback    {rollback.get('status')}"
            + (f" to {rollback['backup_id']}" if rollback.get("backup_id") else "")
            + (f" ({rollback['reason']})" if rollback.get("reason") else "")
        )
    params = record.get("params") or {}
    if params:
        lines.append("Params      " + json.dumps(params, sort_keys=True))

    lines += ["", "Process", "-------"]
    rows: list[tuple[str, ...]] = [
        ("#", "step", "status", "try", "start", "end", "seconds", "outcome")
    ]
    for i, s in enumerate(record.get("steps") or [], 1):
        secs = s.get("seconds")
        rows.append(
            (
                str(i),
                str(s.get("name")),
                str(s.get("status")),
                str(s.get("attempt") or "-"),
                _clock(s.get("start")),
                _clock(s.get("end")),
                f"{secs:.2f}" if isinstance(secs, (int, float)) else "-",
                describe_outcome(str(s.get("task_id")), s.get("outcome")) or s.get("note") or "",
            )
        )
    lines += ["  " + line for line in _table(rows, 4, left_last=True)]
    for s in record.get("steps") or []:
        if s.get("error"):
            lines.append(f"  ! {s['name']}: {s['error']}")

    check_lines = _checks_lines(record.get("checks") or {})
    if check_lines:
        lines += ["", "Checks", "------", *check_lines]

    if record.get("differences"):
        lines += ["", "Differences found by the plan", "-----------------------------"]
        for d in record["differences"]:
            lines.append(f"  {d['table']} ({d['rule']}):")
            lines += [f"    - {c}" for c in d["changes"]]

    lines += ["", "Tables", "------"]
    if record.get("tables"):
        lines += ["  " + line for line in format_summary(record).splitlines()]
    else:
        lines.append("  no table was planned (the run stopped before the plan)")
    samples = sample_key_lines(record.get("tables") or [])
    if samples:
        lines += ["", "Sample keys (up to 20 per kind)", "-------------------------------"]
        lines += ["  " + line for line in samples]
    for unit in record.get("failed_units") or []:
        lines.append(f"  ! failed unit {unit['id']}: {', '.join(unit['tables'])} (rolled back)")
    if record.get("warnings"):
        lines += ["", "Warnings", "--------", *(f"  - {w}" for w in record["warnings"])]
    if record.get("errors"):
        lines += ["", "Errors", "------", *(f"  - {e}" for e in record["errors"])]
    return scrub("\n".join(lines)) + "\n"


SAMPLE_KINDS = (
    ("inserted", "inserted_keys"),
    ("updated", "updated_keys"),
    ("deleted", "deleted_keys"),
)


def sample_keys(table: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """A table's sample keys by kind (``inserted``, ``updated``, ``deleted``), kinds with none left out."""
    return [
        (kind, [str(k) for k in table.get(f) or ()]) for kind, f in SAMPLE_KINDS if table.get(f)
    ]


def sample_key_lines(tables: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per table and kind: ``uiSchemas deleted (3 of 63): a, b, c``."""
    lines = []
    for t in tables:
        for kind, keys in sample_keys(t):
            lines.append(
                f"{t.get('table')} {kind} ({len(keys)} of {t.get(kind, 0)}): {', '.join(keys)}"
            )
    return lines


def _statement(stmt: str) -> str:
    stmt = stmt.strip()
    return stmt if stmt.endswith(";") else stmt + ";"


def _sql_groups(record: Mapping[str, Any], key: str) -> list[tuple[str, str, list[str]]]:
    """(unit label, table, statements) in apply order: units as planned, tables referenced-first."""
    by_table = {t["table"]: t for t in record.get("tables") or []}
    seen: set[str] = set()
    groups = []
    for unit in record.get("units") or []:
        for name in unit.get("tables", []):
            seen.add(name)
            stmts = list((by_table.get(name) or {}).get(key) or [])
            if stmts:
                groups.append((str(unit.get("label")), name, stmts))
    for name, t in by_table.items():
        if name not in seen and t.get(key):
            groups.append(("-", name, list(t[key])))
    return groups


def _sql_header(record: Mapping[str, Any], what: str) -> list[str]:
    return [
        f"-- {what}",
        f"-- Migration {record.get('migration_id')}, run {record.get('run_id')} of {record.get('dag_id')}",
        f"-- Target {endpoint(record.get('target'))}; started {_when(record.get('started_at'))}; "
        f"status {record.get('status')}",
    ]


def schema_sql(record: Mapping[str, Any]) -> str:
    """``schema.sql``: every DDL statement executed, in order, grouped by table; runnable as a script.

    Each unit ran in its own transaction; the script does the same with BEGIN/COMMIT per unit.
    Units that failed were rolled back and executed nothing that stayed: they are not listed.
    """
    lines = _sql_header(record, "Schema (DDL) statements executed on the target, in order")
    groups = _sql_groups(record, "ddl")
    lines.append(
        "-- Run with: psql -v ON_ERROR_STOP=1 -f schema.sql  "
        f"({sum(len(g[2]) for g in groups)} statements)"
    )
    if not groups:
        lines += ["", "-- No schema statement was executed."]
    current_unit = None
    for unit, table, stmts in groups:
        if unit != current_unit:
            if current_unit is not None:
                lines.append("COMMIT;")
            lines += ["", f"-- Unit: {unit}", "BEGIN;"]
            current_unit = unit
        lines += ["", f"-- Table {table}: {len(stmts)} statement(s)"]
        lines += [_statement(s) for s in stmts]
    if current_unit is not None:
        lines.append("COMMIT;")
    return scrub("\n".join(lines)) + "\n"


def data_sql(record: Mapping[str, Any]) -> str:
    """``data.sql``: the shapes of the data statements, grouped by table; no row values.

    COPY reads from the migration file's data, which is not included, so this is a record of
    what ran, not a script to run.
    """
    lines = _sql_header(
        record, "Data statements executed on the target (shapes only, no row values)"
    )
    lines.append("-- COPY ... FROM STDIN read the migration file's rows; they are not included.")
    groups = _sql_groups(record, "data_sql")
    if not groups:
        lines += ["", "-- No data statement was executed."]
    for unit, table, stmts in groups:
        lines += ["", f"-- Table {table} (unit {unit}): {len(stmts)} statement(s)"]
        lines += [_statement(s) for s in stmts]
    return scrub("\n".join(lines)) + "\n"


def summary_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """``summary.json``: the run summary's keys (as ``collect`` always wrote them)."""
    keys = (
        "migration_id",
        "status",
        "run_id",
        "failed_units",
        "tables",
        "totals",
        "warnings",
        "backup",
        "rollback",
        "dry_run",
    )
    out = {k: record.get(k) for k in keys}
    out["migration_file"] = (record.get("migration_file") or {}).get("uri")
    return out


def render(record: Mapping[str, Any]) -> dict[str, str]:
    """Every file of the run's log folder, by name."""
    return {
        RECORD: scrub(json.dumps(record, indent=1, default=str)) + "\n",
        LOG: format_log(record),
        SCHEMA_SQL: schema_sql(record),
        DATA_SQL: data_sql(record),
        SUMMARY: json.dumps(summary_of(record), indent=1, default=str) + "\n",
    }


def write_files(folder: Writable, record: Mapping[str, Any]) -> list[Any]:
    """Write the run's log files into ``folder`` (created); ``migration.json`` last. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = render(record)
    written = []
    for name in (LOG, SCHEMA_SQL, DATA_SQL, SUMMARY, RECORD):
        path = folder / name
        path.write_text(files[name])
        written.append(path)
    return written


def load_record(text: str) -> dict[str, Any]:
    """Parse ``migration.json``; ValueError when it is not a record of this format."""
    record = json.loads(text)
    if not isinstance(record, dict) or record.get("format") != LOG_FORMAT:
        raise ValueError("not a migration log record")
    return record
