"""Runs the rules page starts and follows through Airflow's REST API (as the caller), and what
a preview's dry run says it would do (from its run log)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import HTTPException

from migration_manager import run_files, run_record, store_layout
from migration_manager.airflow_api import AirflowApi, ApiError
from migration_manager.ui.rule_config import refuse

log = logging.getLogger(__name__)

CREATE_DAG = "migration_create"
SYNC_DAG = "migration_sync"
STARTABLE = {"create": CREATE_DAG, "sync": SYNC_DAG}
FINISHED = ("success", "failed")
_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


ROLLBACK_DAG = "migration_rollback"


def trigger(
    api: AirflowApi,
    dag_id: str,
    conf: dict[str, Any],
    rule_set: str | None = None,
    *,
    note: str | None = None,
) -> tuple[str, bool]:
    """Trigger a run through Airflow's REST API as the caller; unpause the DAG when it is paused.

    The pages' DAGs (``migration_create``, ``migration_sync``, ``migration_rollback``) have no
    schedule: unpausing only lets the run the user asked for start. ``note`` is the run's note
    (default: started from the rules page, with ``rule_set``). Returns (run id, whether the DAG
    was unpaused).
    """
    how = f"rule set {rule_set}" if rule_set else "rules configured on the page"
    note = note or f"Started from the rules page ({how})"
    try:
        try:
            run = api.trigger_run(dag_id, conf, note=note)
        except ApiError as exc:
            raise refuse(
                exc.status if exc.status in (400, 403, 404, 409) else 502,
                f"{dag_id} was not triggered: Airflow answered {exc.status}: {exc.detail_text}",
            ) from None
        run_id = str(run["dag_run_id"])
        unpaused = False
        dag = api.dag(dag_id)
        if dag and dag.get("is_paused"):
            try:
                api.set_paused(dag_id, False)
                unpaused = True
            except ApiError as exc:
                log.warning("Could not unpause %s: %s", dag_id, exc.detail_text)
    except httpx.HTTPError as exc:
        raise refuse(502, f"Airflow's API did not answer: {exc}") from None
    log.info("Triggered %s run %s: %s", dag_id, run_id, note)
    return run_id, unpaused


def run_order(tasks: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Each task's place in the run: the DAG's order (a task after those it depends on; tasks
    that can run side by side by their id)."""
    upstream: dict[str, set[str]] = {str(t["task_id"]): set() for t in tasks}
    for t in tasks:
        for name in t.get("downstream_task_ids") or []:
            upstream.setdefault(str(name), set()).add(str(t["task_id"]))
    sorter = TopologicalSorter(upstream)
    sorter.prepare()
    order: dict[str, int] = {}
    while sorter.is_active():
        for name in sorted(sorter.get_ready()):
            order[name] = len(order)
            sorter.done(name)
    return order


def run_page_of(root: Any, run_id: str) -> tuple[str, str] | None:
    """The Migrations page's folder of a run's log, once ``collect_logs`` has written it."""
    folder_of_logs = root / store_layout.LOGS
    part = store_layout.safe_component(run_id)
    if not folder_of_logs.exists():
        return None
    for folder in folder_of_logs.iterdir():
        record = folder / part / run_files.RECORD
        if not record.exists():
            continue
        try:
            run_record.read_record(record.read_text())  # written last, but maybe not completely yet
        except (ValueError, OSError):
            continue
        return folder.name, part
    return None


def run_state(
    api: AirflowApi, root: Any, base: str, airflow_root: str, dag_id: str, run_id: str
) -> dict[str, Any]:
    """A run's state and tasks (Airflow's REST API), and its log page once the store has it."""
    if not _DAG_ID.match(dag_id):
        raise HTTPException(404, f"No DAG {dag_id}")
    try:
        try:
            run = api.dag_run(dag_id, run_id)
        except ApiError as exc:
            raise HTTPException(
                404 if exc.status == 404 else exc.status,
                f"No run {run_id} of {dag_id}: Airflow answered {exc.status}: {exc.detail_text}",
            ) from None
        try:
            tasks = api.task_instances(dag_id, run_id)
        except ApiError:
            tasks = []
        try:
            order = run_order(api.tasks(dag_id))
        except ApiError:
            order = {}
        state = str(run.get("state") or "queued")
        created = None
        if dag_id == CREATE_DAG and state == "success":
            value = api.xcom(dag_id, run_id, "create_migration_file")
            created = str(value or "").strip('"') or None
    except httpx.HTTPError as exc:
        raise HTTPException(502, f"Airflow's API did not answer: {exc}") from None
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
        key=lambda t: (
            order.get(t["task_id"] or "", len(order)),
            t["task_id"] or "",
            t["map_index"],
        ),
    )
    found = run_page_of(root, run_id)
    counts: dict[str, int] = {}
    for t in rows:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    run_path = f"{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "finished": state in FINISHED,
        "tasks": rows,
        "counts": counts,
        "awaiting_input": [t["task_id"] for t in rows if t["state"] == "awaiting_input"],
        "log_page": f"{base}/runs/{found[0]}/{found[1]}" if found else None,
        "migration_file": Path(created).name if created else None,
        "airflow_run": f"{airflow_root}/dags/{run_path}",
        "required_actions": f"{airflow_root}/required_actions?response_received=false",
    }


# --- what a preview says -------------------------------------------------------------------------


def describe_changes(ddl: Sequence[str], kinds: Sequence[str]) -> list[str]:
    """What the structure changes are, in a few words (table created, columns added, ...), from
    the kinds of changes the run made (``structure_changes``) and its statements."""
    created = kinds.count("add_table")
    columns = kinds.count("add_column")
    dropped = kinds.count("drop_column")
    indexes = kinds.count("add_index")
    words = []
    if created:
        words.append("table created")
    if columns:
        words.append(f"{columns} column{'s' if columns != 1 else ''} added")
    if dropped:
        words.append(f"{dropped} column{'s' if dropped != 1 else ''} dropped")
    if indexes and not created:
        words.append(f"{indexes} index{'es' if indexes != 1 else ''} added")
    other = len(ddl) - created - indexes - columns - dropped
    if other > 0 and not created:
        words.append(f"{other} other change{'s' if other != 1 else ''}")
    return words


def preview_rows(record: run_record.RunRecord) -> list[dict[str, Any]]:
    """Per table of a dry run's record, as the rules page's answer shows it: what a run would
    do, without its data SQL."""
    rows = []
    for t in record.tables:
        row: dict[str, Any] = t.model_dump(mode="json", exclude_unset=True, exclude={"data_sql"})
        row["ddl"] = list(t.ddl)
        row["changes"] = describe_changes(t.ddl, list(t.structure_changes))
        rows.append(row)
    return rows


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
    out["tables_created"] = sum(
        1 for r in results if "add_table" in (r.get("structure_changes") or [])
    )
    return out
