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
the right to trigger migrations. The app mounts this router at ``/rules``
(:mod:`~migration_manager.ui.rule_config`: what the page configures;
:mod:`~migration_manager.ui.rule_runs`: the runs it starts).

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
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from migration_manager.config import PROFILE_DEFAULT, RULES, MigrationRules
from migration_manager.errors import ConfigError
from migration_manager.profiles import PROFILES
from migration_manager.rule_sets import NamedRuleSet, check_name
from migration_manager.ui import catalog
from migration_manager.ui import connections as conns
from migration_manager.ui.deps import AirflowRoot, Api, Base, Store, write_access
from migration_manager.ui.render import Static, page
from migration_manager.ui.rule_config import (
    Config,
    PreviewBody,
    RuleSetBody,
    StartBody,
    answers,
    checked,
    independent_rows,
    inspect,
    load_rule_set,
    message_of,
    refuse,
    rule_set_dict,
    rules_of,
    run_conf,
    saved_rule_sets,
    table_dict,
    view_dict,
)
from migration_manager.ui.rule_runs import (
    ROLLBACK_DAG,
    STARTABLE,
    SYNC_DAG,
    preview_rows,
    run_page_of,
    run_state,
    totals,
    trigger,
)

log = logging.getLogger(__name__)

router = APIRouter()
WRITE = write_access()
STATIC = Static("rules", missing="No {name}")


# --- pages ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse, name="rules_page")
def rules_page(
    request: Request,
    api: Api,
    base: Base,
    source: str = "",
    profile: str = "",
    rule_set: str = "",
    target: str = "",
) -> HTMLResponse:
    connections, conn_note = conns.listed(api)
    sets, set_errors = saved_rule_sets()
    error: str | None = None
    status = 200
    loaded: NamedRuleSet | None = None
    rules = MigrationRules()
    if rule_set:
        try:
            loaded = load_rule_set(rule_set)
        except HTTPException as exc:
            error, status = message_of(exc), exc.status_code
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
            with answers():
                env, view = inspect(source, profile, rules)
                independent = independent_rows(view, rules, profile, env.app_env)
        except HTTPException as exc:
            error, status = message_of(exc), exc.status_code
    tables = [table_dict(t) for t in view.tables] if view else []
    data = {
        "api": f"{base}/rules/api",
        "base": base,
        "source": source,
        "profile": profile,
        "rules": rules.model_dump(),
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
def rule_sets_page(request: Request, base: Base, deleted: str = "") -> HTMLResponse:
    sets, errors = saved_rule_sets()
    return page(
        request,
        "rule_sets.html",
        active="rule_sets",
        title="Rule sets",
        rule_sets=[rule_set_dict(s) for s in sets],
        errors=errors,
        deleted=deleted,
        api=f"{base}/rules/api",
    )


@router.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, name="started_run")
def started_run(
    request: Request,
    api: Api,
    root: Store,
    base: Base,
    airflow_root: AirflowRoot,
    dag_id: str,
    run_id: str,
) -> HTMLResponse:
    state = run_state(api, root, base, airflow_root, dag_id, run_id)
    return page(
        request,
        "rules_run.html",
        active="backups" if dag_id == ROLLBACK_DAG else "rules",
        title=f"{dag_id} run",
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        state_url=f"{base}/rules/api/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}",
    )


# --- JSON ----------------------------------------------------------------------------------


@router.get("/api/connections", name="rules_connections")
def api_connections(api: Api) -> dict[str, Any]:
    found, note = conns.listed(api)
    return {"connections": [c.model_dump() for c in found], "note": note}


@router.get("/api/tables", name="rules_tables")
def api_tables(
    source: Annotated[str, Query(min_length=1)],
    profile: str = "nocobase",
    rules: str = "",
    rule_set: str = "",
) -> dict[str, Any]:
    with answers():
        doc = MigrationRules.parse(rules, source="rules").model_dump() if rules.strip() else None
        source_id, prof, ruleset, _name = rules_of(
            Config(source_conn_id=source, profile=profile, rules=doc, rule_set=rule_set or None)
        )
        _env, view = inspect(source_id, prof, ruleset)
    return view_dict(source_id, view)


@router.post("/api/preview", name="rules_preview", dependencies=WRITE)
def api_preview(api: Api, base: Base, body: PreviewBody) -> dict[str, Any]:
    """The plan; with a target, a dry run of ``migration_sync`` as a DAG run (nothing of it
    runs inside the API server): the answer names the run, ``/api/previews/<run>`` says
    what it would do once it has finished."""
    with answers():
        source_id, profile, rules, name = rules_of(body)
        env, view = checked(source_id, profile, rules)
        out: dict[str, Any] = {
            "source_conn_id": source_id,
            "profile": profile,
            "rule_set": name,
            "rules": rules.model_dump(),
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
            conf = run_conf(source_id, profile, rules, name)
            conf.update(
                target_conn_id=body.target_conn_id, allow_drop=body.allow_drop, dry_run=True
            )
    if body.target_conn_id:
        run_id, unpaused = trigger(api, SYNC_DAG, conf, name)
        q = quote(run_id, safe="")
        out.update(
            target_conn_id=body.target_conn_id,
            allow_drop=body.allow_drop,
            run={
                "dag_id": SYNC_DAG,
                "run_id": run_id,
                "conf": conf,
                "unpaused": unpaused,
                "url": f"{base}/rules/runs/{SYNC_DAG}/{q}",
                "result": f"{base}/rules/api/previews/{q}",
            },
        )
        log.info("Preview %s -> %s: dry run %s", source_id, body.target_conn_id, run_id)
    return out


@router.get("/api/previews/{run_id}", name="rules_preview_result")
def api_preview_result(
    api: Api, root: Store, base: Base, airflow_root: AirflowRoot, run_id: str
) -> dict[str, Any]:
    """A preview's dry run: its state while it runs; then, from its run log, per table what a
    run would do (the same rows as the synchronous preview gave)."""
    state = run_state(api, root, base, airflow_root, SYNC_DAG, run_id)
    out: dict[str, Any] = {
        **{k: state[k] for k in ("run_id", "state", "finished", "counts", "log_page")},
        "airflow_run": state["airflow_run"],
        "results": None,
    }
    found = run_page_of(root, run_id)
    if found is None:
        return out
    record = catalog.load_run(root, catalog.RunLogRef(*found))
    if not record.dry_run:
        raise refuse(404, f"{SYNC_DAG} run {run_id} is not a dry run (a preview)")
    rows = preview_rows(record)
    out.update(
        results=rows,
        totals=totals(rows),
        seconds=record.seconds,
        status=str(record.status),
        target_conn_id=record.params.get("target_conn_id"),
        errors=list(record.errors),
    )
    return out


@router.get("/api/rule-sets", name="rules_sets")
def api_rule_sets() -> dict[str, Any]:
    sets, errors = saved_rule_sets()
    return {"rule_sets": [rule_set_dict(s) for s in sets], "errors": errors}


@router.get("/api/rule-sets/{name}", name="rules_set")
def api_rule_set(name: str) -> dict[str, Any]:
    with answers():
        return rule_set_dict(load_rule_set(name))


@router.put("/api/rule-sets/{name}", name="rules_set_save", dependencies=WRITE)
def api_rule_set_save(name: str, body: RuleSetBody) -> dict[str, Any]:
    from migration_manager.airflow.rule_set_store import save_rule_set

    with answers():
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
        checked(rs.source_conn_id, rs.profile, rs.rules)
        path = save_rule_set(rs)
    log.info("Saved rule set %s to %s", name, path)
    return {**rule_set_dict(rs), "path": str(path)}


@router.delete("/api/rule-sets/{name}", name="rules_set_delete", dependencies=WRITE)
def api_rule_set_delete(name: str) -> Response:
    from migration_manager.airflow.rule_set_store import delete_rule_set

    with answers():
        check_name(name)
        if not delete_rule_set(name):
            raise refuse(404, f"Rule set {name!r} does not exist in the migration store")
    log.info("Deleted rule set %s", name)
    return Response(status_code=204)


@router.post("/api/start", name="rules_start", dependencies=WRITE)
def api_start(api: Api, base: Base, body: Annotated[StartBody, Body()]) -> dict[str, Any]:
    dag_id = STARTABLE[body.action]
    with answers():
        source_id, profile, rules, name = rules_of(body)
        env, _view = checked(source_id, profile, rules)
        conf = run_conf(source_id, profile, rules, name)
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
    run_id, unpaused = trigger(api, dag_id, conf, name)
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "conf": conf,
        "unpaused": unpaused,
        "url": f"{base}/rules/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}",
    }


@router.get("/api/runs/{dag_id}/{run_id}", name="rules_run_state")
def api_run_state(
    api: Api, root: Store, base: Base, airflow_root: AirflowRoot, dag_id: str, run_id: str
) -> dict[str, Any]:
    return run_state(api, root, base, airflow_root, dag_id, run_id)


@router.get("/static/{name}", name="rules_static")
async def static(request: Request, name: str) -> Response:
    return await STATIC.response(request, name)
