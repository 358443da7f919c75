"""The rules pages: configure a migration, preview its plan, save it as a rule set, start it.

NocoBase's "Configuration Interface" as pages of the Migrations plugin: pick the source
connection and the profile; the source's tables are listed in their two groups (system and
user-defined) with key kind, row estimate and the rule each gets now; set each group's default
rule, turn on independent rules and give chosen tables their own (rules a table cannot take are
disabled, with the reason planning would give); preview what a run would do to a target (the
same code as a run, rolled back); save the configuration as a named rule set; start
``migration_create`` or ``migration_sync`` through Airflow's REST API and follow the run.

Everything the page does goes through the JSON routes below, validated here on the server
(a refused rule, an independent rule naming a table the source lacks, an unknown connection, a
rule-set name with path characters are answered 400/404 with the message). Reading needs the
same right as the rest of the Migrations page; previewing, saving, deleting and starting need
the right to trigger migrations.

=======  ==========================================  =================================================
GET      ``/rules``                                  the "New migration" page (``source``, ``profile``, ``rule_set``)
GET      ``/rules/sets``                             saved rule sets (edit, delete)
GET      ``/rules/runs/{dag_id}/{run_id}``           a started run: its progress, then its page in the Migrations UI
GET      ``/rules/api/connections``                  postgres connections (metadata DB and ``AIRFLOW_CONN_*``)
GET      ``/rules/api/tables``                       the source's tables and their rules (``source``, ``profile``, ``rules`` JSON or ``rule_set``)
POST     ``/rules/api/preview``                      the plan; with a target, also start a dry run (``migration_sync``, ``dry_run``)
GET      ``/rules/api/previews/{run_id}``            that dry run's state, then what it would do (its run log)
GET      ``/rules/api/rule-sets``                    saved rule sets
GET      ``/rules/api/rule-sets/{name}``             one rule set (with its YAML)
PUT      ``/rules/api/rule-sets/{name}``             save one (checked against its source first)
DELETE   ``/rules/api/rule-sets/{name}``             delete one
POST     ``/rules/api/start``                        trigger ``migration_create`` or ``migration_sync``
GET      ``/rules/api/runs/{dag_id}/{run_id}``       a run's state, its tasks, and its log page once written
GET      ``/rules/static/{rules.js,rules.css}``      the page's script and styles
=======  ==========================================  =================================================
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from migration_manager import run_files, run_record, store_layout
from migration_manager.config import GROUPS, PROFILE_DEFAULT, RULES, RuleSet
from migration_manager.errors import ConfigError, MigrationError, PlanError, TransientError
from migration_manager.profiles import PROFILES, get_profile
from migration_manager.rulesets import NamedRuleSet, check_name, list_rule_sets
from migration_manager.ui import catalog
from migration_manager.ui import connections as conns
from migration_manager.ui.app import _airflow_root, _api_client, _requires, _store, _token

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CREATE_DAG = "migration_create"
SYNC_DAG = "migration_sync"
STARTABLE = {"create": CREATE_DAG, "sync": SYNC_DAG}
_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
FINISHED = ("success", "failed")

Page = Callable[..., HTMLResponse]


# --- request bodies ----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Config(_Body):
    """A migration's configuration: where from, which profile, which rules (or a saved rule set)."""

    source_conn_id: str = ""
    profile: str = "nocobase"
    rules: dict[str, Any] | None = None
    rule_set: str | None = None


class PreviewBody(Config):
    target_conn_id: str | None = None
    allow_drop: bool = False


class RuleSetBody(_Body):
    source_conn_id: str = Field(min_length=1)
    profile: str = "nocobase"
    rules: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class StartBody(Config):
    action: Literal["create", "sync"]
    target_conn_id: str | None = None
    allow_drop: bool = False
    on_missing_plugins: Literal["ask", "continue", "fail"] = "ask"
    on_missing_env: Literal["ask", "fail"] = "ask"


# --- errors as answers -------------------------------------------------------------------------


def _refuse(status: int, message: str, problems: list[str] | None = None) -> HTTPException:
    return HTTPException(status, detail={"message": message, "problems": list(problems or [])})


def _message(exc: HTTPException) -> str:
    detail = exc.detail
    return str(detail.get("message") if isinstance(detail, dict) else detail)


@contextmanager
def _answers() -> Iterator[None]:
    """Engine and connection errors as HTTP answers that carry the message."""
    import psycopg
    import sqlalchemy.exc

    try:
        yield
    except HTTPException:
        raise
    except conns.UnknownConnection as exc:
        raise _refuse(404, str(exc)) from None
    except PlanError as exc:
        raise _refuse(400, str(exc), exc.problems) from None
    except ConfigError as exc:
        raise _refuse(400, str(exc)) from None
    except TransientError as exc:  # a database that does not answer (the password is redacted)
        raise _refuse(502, str(exc)) from None
    except MigrationError as exc:
        raise _refuse(409, str(exc)) from None
    except (sqlalchemy.exc.OperationalError, psycopg.OperationalError, OSError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise _refuse(502, f"Cannot reach the database: {first}") from None


# --- rule sets in the store ------------------------------------------------------------------------


def _rule_set_folder() -> Any:
    from migration_manager.airflow.rule_sets import FOLDER

    return _store() / FOLDER


def saved_rule_sets() -> tuple[list[NamedRuleSet], list[str]]:
    """Every readable rule set in the store, and a message for each unreadable file."""
    return list_rule_sets(_rule_set_folder())


def _load_rule_set(name: str) -> NamedRuleSet:
    from migration_manager.airflow.rule_sets import load_rule_set

    check_name(name)
    if not (_rule_set_folder() / f"{name}.yaml").exists():
        raise _refuse(404, f"Rule set {name!r} does not exist in the migration store")
    return load_rule_set(name)


def rule_set_dict(rs: NamedRuleSet) -> dict[str, Any]:
    return {
        "name": rs.name,
        "description": rs.description,
        "profile": rs.profile,
        "source_conn_id": rs.source_conn_id,
        "rules": rs.rules.to_dict(),
        "yaml": rs.to_yaml(),
    }


# --- the source's tables ------------------------------------------------------------------------


def short_reason(table: str, rule: str, reason: str) -> str:
    """A refusal without the parts the page shows elsewhere (table, rule, advice)."""
    text = reason.removeprefix(f"{table}: ").removeprefix(f"{rule} (chosen) ")
    text = text.split("; use ", 1)[0].removeprefix("is ")
    text = text.replace("refused for tables with an auto-increment id", "auto-increment id")
    if text.startswith("needs a primary key"):
        return "no primary key"
    return text.replace("the application allows only ", "the app allows only ").removesuffix(
        " for this table"
    )


def table_dict(view: Any) -> dict[str, Any]:
    """A :class:`~migration_manager.preview.TableView` for the page: with refusals grouped by reason."""
    d = dict(view.to_dict())
    grouped: dict[str, list[str]] = {}
    for rule, why in view.choices.items():
        if why:
            grouped.setdefault(short_reason(view.name, rule, why), []).append(rule)
    d["refused"] = [{"rules": rules, "why": why} for why, rules in grouped.items()]
    return d


def _rules_of(config: Config) -> tuple[str, str, RuleSet, str | None]:
    """(source conn id, profile, rules, rule set name) of a request, a saved rule set's when named."""
    name = (config.rule_set or "").strip() or None
    if name:
        if config.rules is not None:
            raise _refuse(400, "Give either rules or rule_set, not both")
        saved = _load_rule_set(name)
        return (config.source_conn_id or saved.source_conn_id), saved.profile, saved.rules, name
    profile = get_profile(config.profile or "nocobase").name
    return config.source_conn_id, profile, RuleSet.parse(config.rules), None


def inspect(source_conn_id: str, profile: str, rules: RuleSet) -> tuple[Any, Any]:
    """(environment, SourceView) of a source connection under these rules."""
    from migration_manager.preview import inspect_source

    env = conns.resolve(source_conn_id)
    view = inspect_source(env.dsn, profile=profile, rules=rules, app_env=env.app_env)
    return env, view


def _checked(source_conn_id: str, profile: str, rules: RuleSet) -> tuple[Any, Any]:
    """Like :func:`inspect`, refusing (400, every problem listed) what planning would refuse."""
    env, view = inspect(source_conn_id, profile, rules)
    if view.problems:
        raise PlanError(list(view.problems))
    return env, view


def view_dict(source_conn_id: str, view: Any) -> dict[str, Any]:
    return {
        "source_conn_id": source_conn_id,
        "profile": view.profile,
        "schema": view.schema,
        "tables": [table_dict(t) for t in view.tables],
        "warnings": list(view.warnings),
        "problems": list(view.problems),
    }


def independent_rows(
    view: Any, rules: RuleSet, profile: str, app_env: dict[str, str]
) -> dict[str, str]:
    """Independent rules by the source's (physical) table names, as the page's rows show them."""
    scope = get_profile(profile).scope(dict(app_env))
    names = {t.name for t in view.tables}
    out: dict[str, str] = {}
    for group in GROUPS:
        for name, rule in rules.group(group).independent.items():
            table = name if name in names else scope.physical(name)
            out[table if table in names else name] = rule
    return out


# --- what a preview says -------------------------------------------------------------------------


def describe_ddl(ddl: list[str] | tuple[str, ...]) -> list[str]:
    """What the structure changes are, in a few words: table created, columns added, ..."""
    created = sum(1 for s in ddl if re.match(r"\s*CREATE TABLE", s, re.I))
    columns = sum(len(re.findall(r"\bADD COLUMN\b", s, re.I)) for s in ddl)
    dropped = sum(len(re.findall(r"\bDROP COLUMN\b", s, re.I)) for s in ddl)
    indexes = sum(1 for s in ddl if re.match(r"\s*CREATE (UNIQUE )?INDEX", s, re.I))
    words = []
    if created:
        words.append("table created")
    if columns:
        words.append(f"{columns} column{'s' if columns != 1 else ''} added")
    if dropped:
        words.append(f"{dropped} column{'s' if dropped != 1 else ''} dropped")
    if indexes and not created:
        words.append(f"{indexes} index{'es' if indexes != 1 else ''} added")
    other = (
        len(ddl)
        - created
        - indexes
        - sum(1 for s in ddl if re.search(r"\b(ADD|DROP) COLUMN\b", s, re.I))
    )
    if other > 0 and not created:
        words.append(f"{other} other change{'s' if other != 1 else ''}")
    return words


def result_dict(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    d.pop("data_sql", None)
    d["changes"] = describe_ddl(result.ddl)
    return d


def totals(results: list[dict[str, Any]]) -> dict[str, int]:
    out = {
        k: sum(int(r.get(k) or 0) for r in results)
        for k in ("inserted", "updated", "deleted", "unchanged")
    }
    out["ddl"] = sum(len(r.get("ddl") or []) for r in results)
    out["tables_changed"] = sum(
        1
        for r in results
        if r.get("ddl") or r.get("inserted") or r.get("updated") or r.get("deleted")
    )
    out["tables_created"] = sum(1 for r in results if "table created" in r.get("changes", []))
    return out


# --- Airflow's REST API ------------------------------------------------------------------------------


def _headers(request: Request) -> dict[str, str]:
    token = _token(request)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = resp.text
    return detail if isinstance(detail, str) else json.dumps(detail)


def list_connections(request: Request) -> tuple[list[conns.ConnectionInfo], str | None]:
    """Postgres connections the user may see, and a note when the database's could not be listed."""
    note = None
    from_db: list[conns.ConnectionInfo] = []
    client = _api_client(request)
    try:
        from_db = conns.db_connections(client, _headers(request))
    except PermissionError as exc:
        note = f"Connections of the metadata database are not listed: {exc}"
    except (httpx.HTTPError, ValueError) as exc:
        note = f"Connections of the metadata database are not listed: {exc}"
    finally:
        client.close()
    return conns.merged(from_db, conns.env_connections()), note


def _run_page_of(run_id: str) -> tuple[str, str] | None:
    """The Migrations page's folder of a run's log, once ``collect_logs`` has written it."""
    root = _store() / "logs"
    part = store_layout.safe_component(run_id)
    if not root.exists():
        return None
    for folder in root.iterdir():
        record = folder / part / run_files.RECORD
        if not record.exists():
            continue
        try:
            run_record.load_record(record.read_text())  # written last, but maybe not completely yet
        except (ValueError, OSError):
            continue
        return folder.name, part
    return None


# --- routes ---------------------------------------------------------------------------------------


def install(app: FastAPI, page: Page) -> None:
    """Add the rules pages and their API to the Migrations app."""
    write = [Depends(_requires("POST"))]
    router = APIRouter(prefix="/rules")

    def base(request: Request) -> str:
        return str(request.scope.get("root_path") or "")

    # --- pages ---------------------------------------------------------------------------------

    @router.get("", response_class=HTMLResponse, name="rules_page")
    def rules_page(
        request: Request,
        source: str = "",
        profile: str = "",
        rule_set: str = "",
        target: str = "",
    ) -> HTMLResponse:
        connections, conn_note = list_connections(request)
        sets, set_errors = saved_rule_sets()
        error: str | None = None
        status = 200
        loaded: NamedRuleSet | None = None
        rules = RuleSet()
        if rule_set:
            try:
                loaded = _load_rule_set(rule_set)
            except HTTPException as exc:
                error, status = _message(exc), exc.status_code
            except ConfigError as exc:
                error, status = str(exc), 400
        if loaded is not None:
            rules = loaded.rules
            source = source or loaded.source_conn_id
            profile = profile or loaded.profile
        ids = [c.conn_id for c in connections]
        if not source and not rule_set and "migration_source" in ids:
            source = "migration_source"
        profile = profile if profile in PROFILES else "nocobase"
        view = None
        independent: dict[str, str] = {}
        if source and error is None:
            try:
                with _answers():
                    env, view = inspect(source, profile, rules)
                    independent = independent_rows(view, rules, profile, env.app_env)
            except HTTPException as exc:
                error, status = _message(exc), exc.status_code
        tables = [table_dict(t) for t in view.tables] if view else []
        data = {
            "api": f"{base(request)}/rules/api",
            "base": base(request),
            "source": source,
            "profile": profile,
            "rules": rules.to_dict(),
            "rule_set": rule_set_dict(loaded) if loaded else None,
            "independent": independent,
            "tables": tables,
            "problems": list(view.problems) if view else [],
            "rule_names": list(RULES),
        }
        return page(
            request,
            "rules.html",
            status,
            active="rules",
            title="New migration",
            connections=connections,
            conn_note=conn_note,
            rule_sets=sets,
            rule_set_errors=set_errors,
            loaded=loaded,
            source=source,
            profile=profile,
            profiles=sorted(PROFILES),
            target=target or ("migration_target" if "migration_target" in ids else ""),
            view=view,
            tables=tables,
            independent=independent,
            rules=rules,
            rule_names=RULES,
            profile_default=PROFILE_DEFAULT,
            error=error,
            data_json=json.dumps(data).replace("</", "<\\/"),
        )

    @router.get("/sets", response_class=HTMLResponse, name="rule_sets_page")
    def rule_sets_page(request: Request, deleted: str = "") -> HTMLResponse:
        sets, errors = saved_rule_sets()
        return page(
            request,
            "rule_sets.html",
            active="rule_sets",
            title="Rule sets",
            rule_sets=[rule_set_dict(s) for s in sets],
            errors=errors,
            deleted=deleted,
            api=f"{base(request)}/rules/api",
        )

    @router.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, name="started_run")
    def started_run(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
        state = run_state(request, dag_id, run_id)
        return page(
            request,
            "rules_run.html",
            active="rules",
            title=f"{dag_id} run",
            dag_id=dag_id,
            run_id=run_id,
            state=state,
            state_url=f"{base(request)}/rules/api/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}",
        )

    # --- JSON ----------------------------------------------------------------------------------

    @router.get("/api/connections", name="rules_connections")
    def api_connections(request: Request) -> dict[str, Any]:
        found, note = list_connections(request)
        return {"connections": [c.to_dict() for c in found], "note": note}

    @router.get("/api/tables", name="rules_tables")
    def api_tables(
        source: Annotated[str, Query(min_length=1)],
        profile: str = "nocobase",
        rules: str = "",
        rule_set: str = "",
    ) -> dict[str, Any]:
        with _answers():
            doc = RuleSet.parse(rules, source="rules").to_dict() if rules.strip() else None
            source_id, prof, ruleset, _name = _rules_of(
                Config(source_conn_id=source, profile=profile, rules=doc, rule_set=rule_set or None)
            )
            _env, view = inspect(source_id, prof, ruleset)
        return view_dict(source_id, view)

    @router.post("/api/preview", name="rules_preview", dependencies=write)
    def api_preview(request: Request, body: PreviewBody) -> dict[str, Any]:
        """The plan; with a target, a dry run of ``migration_sync`` as a DAG run (nothing of it
        runs inside the API server): the answer names the run, ``/api/previews/<run>`` says
        what it would do once it has finished."""
        with _answers():
            source_id, profile, rules, name = _rules_of(body)
            env, view = _checked(source_id, profile, rules)
            out: dict[str, Any] = {
                "source_conn_id": source_id,
                "profile": profile,
                "rule_set": name,
                "rules": rules.to_dict(),
                "plan": [
                    {k: t[k] for k in ("name", "group", "rule", "rule_source", "key_kind")}
                    for t in (table_dict(v) for v in view.tables)
                ],
                "warnings": list(view.warnings),
                "target_conn_id": None,
                "results": None,
                "run": None,
            }
            if body.target_conn_id:
                target = conns.resolve(body.target_conn_id)
                if target.dsn == env.dsn:
                    raise ConfigError("The source and the target are the same database")
                conf = _run_conf(source_id, profile, rules, name)
                conf.update(
                    target_conn_id=body.target_conn_id, allow_drop=body.allow_drop, dry_run=True
                )
        if body.target_conn_id:
            run_id, unpaused = trigger(request, SYNC_DAG, conf, name)
            q = quote(run_id, safe="")
            out.update(
                target_conn_id=body.target_conn_id,
                allow_drop=body.allow_drop,
                run={
                    "dag_id": SYNC_DAG,
                    "run_id": run_id,
                    "conf": conf,
                    "unpaused": unpaused,
                    "url": f"{base(request)}/rules/runs/{SYNC_DAG}/{q}",
                    "result": f"{base(request)}/rules/api/previews/{q}",
                },
            )
            log.info("Preview %s -> %s: dry run %s", source_id, body.target_conn_id, run_id)
        return out

    @router.get("/api/previews/{run_id}", name="rules_preview_result")
    def api_preview_result(request: Request, run_id: str) -> dict[str, Any]:
        """A preview's dry run: its state while it runs; then, from its run log, per table what a
        run would do (the same rows as the synchronous preview gave)."""
        state = run_state(request, SYNC_DAG, run_id)
        out: dict[str, Any] = {
            **{k: state[k] for k in ("run_id", "state", "finished", "counts", "log_page")},
            "airflow_run": state["airflow_run"],
            "results": None,
        }
        found = _run_page_of(run_id)
        if found is None:
            return out
        record = catalog.load_run(_store(), catalog.RunRef(*found))
        if not record.get("dry_run"):
            raise _refuse(404, f"{SYNC_DAG} run {run_id} is not a dry run (a preview)")
        rows = []
        for t in record.get("tables") or []:
            row = {k: v for k, v in t.items() if k != "data_sql"}
            row["ddl"] = list(t.get("ddl") or [])
            row["changes"] = describe_ddl(row["ddl"])
            rows.append(row)
        out.update(
            results=rows,
            totals=totals(rows),
            seconds=record.get("seconds"),
            status=record.get("status"),
            target_conn_id=(record.get("params") or {}).get("target_conn_id"),
            errors=list(record.get("errors") or []),
        )
        return out

    @router.get("/api/rule-sets", name="rules_sets")
    def api_rule_sets() -> dict[str, Any]:
        sets, errors = saved_rule_sets()
        return {"rule_sets": [rule_set_dict(s) for s in sets], "errors": errors}

    @router.get("/api/rule-sets/{name}", name="rules_set")
    def api_rule_set(name: str) -> dict[str, Any]:
        with _answers():
            return rule_set_dict(_load_rule_set(name))

    @router.put("/api/rule-sets/{name}", name="rules_set_save", dependencies=write)
    def api_rule_set_save(name: str, body: RuleSetBody) -> dict[str, Any]:
        from migration_manager.airflow.rule_sets import save_rule_set

        with _answers():
            check_name(name)
            rs = NamedRuleSet.parse(
                {
                    "name": name,
                    "description": body.description,
                    "profile": body.profile,
                    "source_conn_id": body.source_conn_id,
                    "rules": body.rules,
                },
                name=name,
            )
            _checked(rs.source_conn_id, rs.profile, rs.rules)
            path = save_rule_set(rs)
        log.info("Saved rule set %s to %s", name, path)
        return {**rule_set_dict(rs), "path": str(path)}

    @router.delete("/api/rule-sets/{name}", name="rules_set_delete", dependencies=write)
    def api_rule_set_delete(name: str) -> Response:
        from migration_manager.airflow.rule_sets import delete_rule_set

        with _answers():
            check_name(name)
            if not delete_rule_set(name):
                raise _refuse(404, f"Rule set {name!r} does not exist in the migration store")
        log.info("Deleted rule set %s", name)
        return Response(status_code=204)

    @router.post("/api/start", name="rules_start", dependencies=write)
    def api_start(request: Request, body: Annotated[StartBody, Body()]) -> dict[str, Any]:
        dag_id = STARTABLE[body.action]
        with _answers():
            source_id, profile, rules, name = _rules_of(body)
            env, _view = _checked(source_id, profile, rules)
            conf = _run_conf(source_id, profile, rules, name)
            if body.action == "sync":
                if not body.target_conn_id:
                    raise ConfigError("Sync now needs a target connection")
                target = conns.resolve(body.target_conn_id)
                if target.dsn == env.dsn:
                    raise ConfigError("The source and the target are the same database")
                conf.update(
                    target_conn_id=body.target_conn_id,
                    allow_drop=body.allow_drop,
                    on_missing_plugins=body.on_missing_plugins,
                    on_missing_env=body.on_missing_env,
                )
        run_id, unpaused = trigger(request, dag_id, conf, name)
        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "conf": conf,
            "unpaused": unpaused,
            "url": f"{base(request)}/rules/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}",
        }

    @router.get("/api/runs/{dag_id}/{run_id}", name="rules_run_state")
    def api_run_state(request: Request, dag_id: str, run_id: str) -> dict[str, Any]:
        return run_state(request, dag_id, run_id)

    @router.get("/static/{name}", name="rules_static")
    def static(name: str) -> Response:
        media = {"rules.js": "text/javascript", "rules.css": "text/css"}
        if name not in media:
            raise HTTPException(404, f"No {name}")
        return FileResponse(HERE / "static" / name, media_type=media[name])

    app.include_router(router)


def _run_conf(source_id: str, profile: str, rules: RuleSet, name: str | None) -> dict[str, Any]:
    """A started run's conf: the source and the rule set by name, or the page's rules."""
    conf: dict[str, Any] = {"source_conn_id": source_id}
    if name:
        conf["rule_set"] = name
    else:
        conf.update(profile=profile, rules=rules.to_dict())
    return conf


def trigger(
    request: Request, dag_id: str, conf: dict[str, Any], rule_set: str | None
) -> tuple[str, bool]:
    """Trigger a run through Airflow's REST API as the caller; unpause the DAG when it is paused.

    ``migration_create`` and ``migration_sync`` have no schedule: unpausing only lets the run
    the user asked for start. Returns (run id, whether the DAG was unpaused).
    """
    headers = _headers(request)
    how = f"rule set {rule_set}" if rule_set else "rules configured on the page"
    body = {"logical_date": None, "conf": conf, "note": f"Started from the rules page ({how})"}
    client = _api_client(request)
    try:
        resp = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body, headers=headers)
        if resp.status_code >= 300:
            raise _refuse(
                resp.status_code if resp.status_code in (400, 403, 404, 409) else 502,
                f"{dag_id} was not triggered: Airflow answered {resp.status_code}: {_detail(resp)}",
            )
        run_id = str(resp.json()["dag_run_id"])
        unpaused = False
        dag = client.get(f"/api/v2/dags/{dag_id}", headers=headers)
        if dag.status_code == 200 and dag.json().get("is_paused"):
            patched = client.patch(
                f"/api/v2/dags/{dag_id}", json={"is_paused": False}, headers=headers
            )
            unpaused = patched.status_code == 200
            if not unpaused:
                log.warning("Could not unpause %s: %s", dag_id, _detail(patched))
    except httpx.HTTPError as exc:
        raise _refuse(502, f"Airflow's API did not answer: {exc}") from None
    finally:
        client.close()
    log.info("Triggered %s run %s (%s)", dag_id, run_id, how)
    return run_id, unpaused


def run_state(request: Request, dag_id: str, run_id: str) -> dict[str, Any]:
    """A run's state and tasks (Airflow's REST API), and its log page once the store has it."""
    if not _DAG_ID.match(dag_id):
        raise HTTPException(404, f"No DAG {dag_id}")
    headers = _headers(request)
    path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
    client = _api_client(request)
    try:
        run = client.get(path, headers=headers)
        if run.status_code != 200:
            raise HTTPException(
                404 if run.status_code == 404 else run.status_code,
                f"No run {run_id} of {dag_id}: Airflow answered {run.status_code}: {_detail(run)}",
            )
        tis = client.get(f"{path}/taskInstances", params={"limit": 500}, headers=headers)
        tasks = tis.json().get("task_instances", []) if tis.status_code == 200 else []
        state = str(run.json().get("state") or "queued")
        created = None
        if dag_id == CREATE_DAG and state == "success":
            xcom = client.get(
                f"{path}/taskInstances/create_migration_file/xcomEntries/return_value",
                headers=headers,
            )
            if xcom.status_code == 200:
                created = str(xcom.json().get("value") or "").strip('"') or None
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"Airflow's API did not answer: {exc}") from None
    finally:
        client.close()
    rows = sorted(
        (
            {
                "task_id": t.get("task_id"),
                "map_index": t.get("map_index", -1),
                "label": t.get("rendered_map_index") or None,
                "state": t.get("state") or "none",
                "start": t.get("start_date"),
            }
            for t in tasks
        ),
        key=lambda t: (t["start"] or "9", t["task_id"] or "", t["map_index"]),
    )
    found = _run_page_of(run_id)
    root = str(request.scope.get("root_path") or "")
    counts: dict[str, int] = {}
    for t in rows:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "finished": state in FINISHED,
        "tasks": rows,
        "counts": counts,
        "awaiting_input": [t["task_id"] for t in rows if t["state"] == "awaiting_input"],
        "log_page": f"{root}/runs/{found[0]}/{found[1]}" if found else None,
        "migration_file": Path(created).name if created else None,
        "airflow_run": f"{_airflow_root(request)}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
        "required_actions": f"{_airflow_root(request)}/required_actions?response_received=false",
    }
