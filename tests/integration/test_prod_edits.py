"""Prod edits that a migration would lose, and the drift guard (issue 14).

Engine level on generic tables, then DAG runs on the NocoBase fixture pair: a prod edit of
``uiSchemas`` after a first migration is listed before the next overwrite (plan, dry run,
refusal), and a target changed after the approval fails its unit with prod untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from migration_manager.airflow.target_record import fingerprints_left
from migration_manager.archive import open_archive
from migration_manager.destructive import ProdEdit, assess
from migration_manager.errors import ApplyError
from migration_manager.execute import UnitResult, apply_unit, prepare
from migration_manager.pg import identity_of
from migration_manager.plan_report import PlanReport
from migration_manager.prod_edits import TargetRecord, changed_since, target_key
from tests.airflowtools import answer_when_asked, run_dag, task_states, xcom
from tests.integration.dagrun_tools import (
    UI_OVERWRITE_ANSWERS,
    UI_OVERWRITE_PART,
    connect_nocobase_pair,
    xcom_key,
)
from tests.pgtools import make_file, rows, sql, table_text

pytestmark = [pytest.mark.postgres]

SOURCE = """
CREATE TABLE cfg (id int PRIMARY KEY, v text);
INSERT INTO cfg SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE ups (id text PRIMARY KEY, v text);
INSERT INTO ups VALUES ('a', '1'), ('b', '2'), ('c', '3');
CREATE TABLE calm (id int PRIMARY KEY, v text);
INSERT INTO calm SELECT g, 'c' || g FROM generate_series(1, 5) g;
CREATE TABLE loose (v text);
INSERT INTO loose VALUES ('x'), ('y');
"""
RULES = {"user": {"default": "overwrite", "independent": {"ups": "upsert"}}}


def _migrate(reader: Any, target: str) -> tuple[Any, list[Any]]:
    """prepare + apply every unit, as a real run does (units get the plan's fingerprints)."""
    plan = prepare(reader, target)
    results = [
        apply_unit(reader, target, u, checked=plan.checked, expected=plan.unit_fingerprints(u))
        for u in plan.units
    ]
    return plan, results


def _record_after(plan: Any, results: list[Any], reader: Any) -> TargetRecord:
    report = {
        "rules": {e.name: e.rule for e in reader.manifest.tables},
        "units": [u.model_dump(mode="json") for u in plan.units],
        "target_fingerprints": {
            t: (fp.model_dump(exclude_none=True) if fp is not None else None)
            for t, fp in plan.target_fingerprints.items()
        },
    }
    # as collect_logs reads them: the plan's report and the units' results from their XCom form
    left = fingerprints_left(
        PlanReport.model_validate(report),
        [UnitResult.model_validate(r.model_dump(mode="json")) for r in results],
    )
    return TargetRecord(target_key="t").updated(left, "run 1")


def test_prod_edits_since_the_last_migration_are_listed_and_destructive(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, SOURCE)
    make_file(source, tmp_path / "m.zip", rules=RULES)
    with open_archive(tmp_path / "m.zip") as reader:
        plan, results = _migrate(reader, target)
        record = _record_after(plan, results, reader)
    # every data table is recorded as the migration left it
    assert set(record.tables) == {"cfg", "ups", "calm", "loose"}
    assert record.tables["cfg"].rows == 10 and record.tables["cfg"].run == "run 1"
    # people edit prod: 3 rows of cfg, one row of ups changed and one added (kept by upsert),
    # a keyless row changed; calm untouched
    sql(target, "UPDATE cfg SET v = 'prod' WHERE id IN (2, 3, 5)")
    sql(target, "UPDATE ups SET v = 'prod' WHERE id = 'b'; INSERT INTO ups VALUES ('z', 'new')")
    sql(target, "UPDATE loose SET v = 'prod' WHERE v = 'y'")
    before = {t: table_text(target, t) for t in ("cfg", "ups", "calm", "loose")}
    with open_archive(tmp_path / "m.zip") as reader:
        plan = prepare(reader, target)
        rules = {e.name: e.rule for e in reader.manifest.tables}
        applied = {t for u in plan.units for t in u.tables}
        changed = changed_since(record, plan.target_fingerprints, rules, applied)
        assert [(c.table, c.recorded_rows, c.rows) for c in changed] == [
            ("cfg", 10, 10),
            ("loose", 2, 2),
            ("ups", 3, 4),
        ]
        found = assess(
            reader, target, plan.pending, max_delete_ratio=1.0, changed=[c.table for c in changed]
        )
    assert found.prod_edits == (
        ProdEdit(table="cfg", rule="overwrite", rows=3, keys=("2", "3", "5")),
        ProdEdit(table="loose", rule="overwrite", rows=1, keys=()),
        # upsert: only the changed row whose key the source has; the added row stays
        ProdEdit(table="ups", rule="upsert", rows=1, keys=("b",)),
    )
    assert found.destructive  # no loss over the ratio, no drop: the edits alone
    assert found.parts == [
        "changed in prod since the last migration: 3 rows of cfg would be replaced (keys 2, 3, 5)",
        "changed in prod since the last migration: 1 row of loose would be replaced",
        "changed in prod since the last migration: 1 row of ups would be updated (keys b)",
    ]
    # nothing written by the plan or the check
    assert {t: table_text(target, t) for t in before} == before
    # a record of another target (none yet) lists nothing
    assert changed_since(None, plan.target_fingerprints, rules, applied) == []


def test_the_target_key_names_the_database() -> None:
    from migration_manager.db_identity import DatabaseIdentity

    a = DatabaseIdentity(
        system_identifier="7312345678901234567",
        database_oid=16384,
        database="prod",
        server_started_at="1700000000.5",
    )
    assert target_key("migration/target", a) == "migration_target-7312345678901234567-16384"
    b = DatabaseIdentity(
        system_identifier=None,
        database_oid=16385,
        database="prod",
        server_started_at="1700000000.5",
    )
    assert target_key("prod", b) == "prod-u17000000005-16385"


def test_a_table_changed_after_the_plan_fails_its_unit_and_nothing_is_written(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(source, SOURCE)
    make_file(source, tmp_path / "m.zip", rules=RULES)
    with open_archive(tmp_path / "m.zip") as reader:
        plan = prepare(reader, target)  # the target has no table yet: all absent
        assert plan.target_fingerprints["cfg"] is None
        (cfg_unit,) = [u for u in plan.units if u.tables == ("cfg",)]
        # someone creates the table between the plan and the unit
        sql(
            target, "CREATE TABLE cfg (id int PRIMARY KEY, v text); INSERT INTO cfg VALUES (1, 'p')"
        )
        with pytest.raises(ApplyError) as raised:
            apply_unit(reader, target, cfg_unit, expected=plan.unit_fingerprints(cfg_unit))
        assert raised.value.terminal
        assert str(raised.value).startswith("cfg: changed in the target since the plan")
        assert "Run the migration again" in str(raised.value)
        assert table_text(target, "cfg") == ["(1,p)"]
        # a migration into it, then a plan, then a prod edit before the unit
        sql(target, "DROP TABLE cfg")
        _migrate(reader, target)
        sql(target, "UPDATE cfg SET v = 'prod' WHERE id = 1")  # plan sees this state
        plan = prepare(reader, target)
        (cfg_unit,) = [u for u in plan.units if u.tables == ("cfg",)]
        sql(target, "UPDATE cfg SET v = 'later' WHERE id = 4")  # changed after the plan
        edited = table_text(target, "cfg")
        with pytest.raises(ApplyError, match="cfg: changed in the target since the plan"):
            apply_unit(reader, target, cfg_unit, expected=plan.unit_fingerprints(cfg_unit))
        assert table_text(target, "cfg") == edited  # nothing of the unit written
        # unchanged since the plan: the unit applies
        plan = prepare(reader, target)
        (cfg_unit,) = [u for u in plan.units if u.tables == ("cfg",)]
        result = apply_unit(reader, target, cfg_unit, expected=plan.unit_fingerprints(cfg_unit))
        assert result.tables[0].updated == 2
        assert table_text(target, "cfg") == table_text(source, "cfg")


# --- DAG runs on the NocoBase fixture pair ----------------------------------------------------

EDITED = 3


def _edit_ui_schemas(prod: str, n: int, mark: str) -> list[str]:
    """Edit the ``n`` smallest uiSchemas rows in prod; returns their keys."""
    keys = [
        str(r[0])
        for r in rows(prod, 'SELECT "x-uid" FROM "uiSchemas" ORDER BY "x-uid" LIMIT %s', (n,))
    ]
    sql(prod, 'UPDATE "uiSchemas" SET name = %s WHERE "x-uid" = ANY(%s)', (mark, keys))
    return keys


def _store() -> Path:
    return Path(os.environ["MIGRATION_STORE"].removeprefix("file://"))


@pytest.mark.airflow
def test_a_prod_edit_after_a_migration_is_listed_before_the_next_overwrite(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    first = run_dag("migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "continue"})
    assert str(first.state) == "success", task_states(first)
    # this prod's record (other tests of the session migrate into other databases)
    key = target_key("migration_target", identity_of(prod))
    recorded = _store() / "targets" / key / "fingerprints.json"
    tables = json.loads(recorded.read_text())["tables"]
    # as the migration left it: staging's rows
    assert tables["uiSchemas"]["rows"] == len(table_text(staging, "uiSchemas"))
    assert first.run_id in tables["uiSchemas"]["run"]
    # the next sync finds nothing changed in prod: not destructive
    again = run_dag("migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "fail"})
    assert str(again.state) == "success", task_states(again)
    assert xcom(again, "destructive_check")["decision"] == "not destructive"
    # someone edits three configuration rows in prod
    keys = _edit_ui_schemas(prod, EDITED, "edited in prod")
    edited = table_text(prod, "uiSchemas")
    part = (
        f"changed in prod since the last migration: {EDITED} rows of uiSchemas would be "
        f"replaced (keys {', '.join(keys)})"
    )
    # a dry run lists it (plan report, destructive_check, run log), writes nothing
    dry = run_dag(
        "migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "fail", "dry_run": True}
    )
    assert str(dry.state) == "success", task_states(dry)
    report = xcom_key(dry, "plan", "report")
    assert [c["table"] for c in report["changed_in_prod"]] == ["uiSchemas"]
    assert xcom(dry, "destructive_check")["parts"] == [part]
    assert table_text(prod, "uiSchemas") == edited
    from migration_manager import store_layout

    (log_json,) = _store().glob(f"logs/*/{store_layout.safe_component(dry.run_id)}/migration.json")
    log_text = (log_json.parent / "migration.log").read_text()
    assert part in log_text
    assert "changed in prod since the last migration: uiSchemas" in log_text  # the plan step
    # a nightly-style run refuses it: destructive because of the prod edit alone
    refused = run_dag("migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "fail"})
    assert str(refused.state) == "failed"
    assert task_states(refused)["backup"] == ["upstream_failed"]
    found = xcom_key(refused, "destructive_check", "destructive")
    assert found["parts"] == [part] and found["refused_by"] == "on_destructive=fail"
    assert found["prod_edits"][0]["rows"] == EDITED
    assert table_text(prod, "uiSchemas") == edited


@pytest.mark.airflow
def test_a_target_changed_after_the_approval_fails_the_unit_with_prod_untouched(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    edited: list[list[str]] = []

    def edit_prod() -> None:  # after the plan and its approval question, before the answer
        _edit_ui_schemas(prod, 1, "edited while waiting")
        edited.append(table_text(prod, "uiSchemas"))

    thread = answer_when_asked(
        "migration_sync", "destructive_check", ["Approve"], user="olga", before_answer=edit_prod
    )
    dag_run = run_dag("migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "ask"})
    assert thread.error is None and thread.answered and edited
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["destructive_check"] == ["success"]
    assert "failed" in states["apply_table"]
    # prod keeps the edit: nothing of the approved plan was written to uiSchemas
    assert table_text(prod, "uiSchemas") == edited[0]
    assert table_text(prod, "uiSchemas") != table_text(staging, "uiSchemas")
    from migration_manager import store_layout

    (log_json,) = _store().glob(
        f"logs/*/{store_layout.safe_component(dag_run.run_id)}/migration.json"
    )
    text = log_json.read_text()
    assert "uiSchemas: changed in the target since the plan" in text
    assert "Nothing of unit uiSchemas (overwrite) was written" in text
    assert "Run the migration again" in text
    assert UI_OVERWRITE_PART in text  # the approved plan (63 of 66 rows) is in the log, not applied


@pytest.mark.airflow
def test_a_restore_is_not_taken_for_prod_edits_at_the_next_sync(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync, restore the backup the sync took, sync again: nothing is "changed in prod since
    the last migration" (before, the rows the restore put back were: 12 applicationPlugins,
    1 systemSettings, 1 uiSchemas); a prod edit after the restore still is."""
    from migration_manager.backup.fingerprints import table_fingerprints
    from migration_manager.backup.record import read_restores

    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = table_fingerprints(prod)
    plugins = table_text(prod, "applicationPlugins")
    # the default rules (the package's own), as a user's first sync
    conf = {k: UI_OVERWRITE_ANSWERS[k] for k in ("env_values", "on_missing_plugins")}
    conf["on_destructive"] = "continue"
    first = run_dag("migration_sync", conf)
    assert str(first.state) == "success", task_states(first)
    assert table_text(prod, "applicationPlugins") != plugins
    backup_id = xcom(first, "backup")["backup_id"]

    restore = run_dag(
        "migration_rollback", {"target_conn_id": "migration_target", "backup_id": backup_id}
    )
    assert str(restore.state) == "success", task_states(restore)
    assert table_fingerprints(prod) == before  # prod is as before the sync
    key = target_key("migration_target", identity_of(prod))
    tables = json.loads((_store() / "targets" / key / "fingerprints.json").read_text())["tables"]
    assert restore.run_id in tables["applicationPlugins"]["run"]
    assert tables["applicationPlugins"]["rows"] == len(plugins)
    # the restore is in the store: which backup, by which run, what it undid
    (found,) = [
        r
        for r in read_restores(_store() / "restores" / "migration_target")
        if r.run_id == restore.run_id
    ]
    assert (found.backup_id, found.mode, found.undid_run_id) == (
        backup_id,
        "in_place",
        first.run_id,
    )

    again = run_dag("migration_sync", {**conf, "dry_run": True})
    assert str(again.state) == "success", task_states(again)
    assert xcom_key(again, "plan", "report")["changed_in_prod"] == []
    assert not any("changed in prod" in p for p in xcom(again, "destructive_check")["parts"])

    # a prod edit made after the restore is found as before
    _edit_ui_schemas(prod, EDITED, "edited after the restore")
    edited = run_dag("migration_sync", {**conf, "dry_run": True})
    assert [c["table"] for c in xcom_key(edited, "plan", "report")["changed_in_prod"]] == [
        "uiSchemas"
    ]
