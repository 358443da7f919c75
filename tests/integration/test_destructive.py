"""Destructive plans: counted at plan time, then asked (manual runs), refused (pipelines) or allowed.

The NocoBase fixture pair: overwriting prod's uiSchemas with staging's deletes 63 of its 66 rows
(NocoBase's schema uids differ between the two environments).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_manager.archive import open_archive
from migration_manager.destructive import DestructivePlan, assess
from migration_manager.execute import prepare
from migration_manager.step_outcomes import Difference
from tests.airflowtools import (
    answer_when_asked,
    pipeline_dag,
    run_dag,
    task_states,
    xcom,
)
from tests.integration.dagrun_tools import (
    UI_OVERWRITE,
    UI_OVERWRITE_ANSWERS,
    UI_OVERWRITE_PART,
    connect_nocobase_pair,
    xcom_key,
)
from tests.mailtools import Inbox, message_body
from tests.pgtools import make_file, scalar, sql, table_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

# --- counting, engine level ---------------------------------------------------------------------

SOURCE = """
CREATE TABLE keyed (id int PRIMARY KEY, v text);
INSERT INTO keyed SELECT g, 'v' || g FROM generate_series(1, 20) g;
CREATE TABLE loose (v text);
INSERT INTO loose VALUES ('a'), ('b');
CREATE TABLE same (id int PRIMARY KEY, v text);
INSERT INTO same SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE retyped (id int PRIMARY KEY, v integer);
INSERT INTO retyped VALUES (1, 1);
CREATE TABLE slim (id int PRIMARY KEY);
"""
TARGET = """
CREATE TABLE keyed (id int PRIMARY KEY, v text);
INSERT INTO keyed SELECT g, 'old' || g FROM generate_series(11, 110) g;
CREATE TABLE loose (v text);
INSERT INTO loose VALUES ('a'), ('c'), ('d');
CREATE TABLE same (id int PRIMARY KEY, v text);
INSERT INTO same SELECT g, 'other' || g FROM generate_series(1, 10) g;
CREATE TABLE retyped (id int PRIMARY KEY, v text);
INSERT INTO retyped VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four');
CREATE TABLE slim (id int PRIMARY KEY, extra text);
"""


def test_losses_are_counted_at_plan_time(source: str, target: str, tmp_path: Path) -> None:
    sql(source, SOURCE)
    sql(target, TARGET)
    make_file(source, tmp_path / "m.zip", rules={"user": {"default": "overwrite"}})
    before = {t: table_text(target, t) for t in ("keyed", "loose", "same", "retyped")}
    with open_archive(tmp_path / "m.zip") as reader:
        plan = prepare(reader, target, allow_drop=True)
        found = assess(reader, target, plan.pending, max_delete_ratio=0.1)
    losses = {t.table: t for t in found.losses}
    # keyed: target ids 11..110, the source has 11..20 -> 90 of 100 deleted
    assert (losses["keyed"].deleted, losses["keyed"].target_rows, losses["keyed"].exact) == (
        90,
        100,
        True,
    )
    assert losses["loose"].deleted == 3  # keyless rows differ: all replaced
    assert "same" not in losses  # every key is in the source: rows updated, none deleted
    # the target's text column cannot take the source's integers as they are: a lower bound
    assert (losses["retyped"].deleted, losses["retyped"].exact) == (3, False)
    assert found.drops == ("slim: drop column extra",)
    assert found.parts == [
        "keyed: overwrite would delete 90 of its 100 rows (90%)",
        "loose: overwrite would delete 3 of its 3 rows (100%)",
        "retyped: overwrite would delete at least 3 of its 4 rows (75%)",
        "slim: drop column extra",
    ]
    assert DestructivePlan.model_validate(found.model_dump(mode="json")) == found
    # nothing was written, no temporary table left
    assert {t: table_text(target, t) for t in before} == before
    with open_archive(tmp_path / "m.zip") as reader:
        plan = prepare(reader, target)  # allow_drop off: no drop
        lenient = assess(reader, target, plan.pending, max_delete_ratio=0.95)
    assert lenient.drops == () and lenient.parts == [
        "loose: overwrite would delete 3 of its 3 rows (100%)"
    ]


def test_a_table_locked_by_another_session_is_not_counted_nor_waited_for(
    source: str, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like plan, the check does not wait for a table someone holds locked: it is listed as not
    counted (not destructive by itself); the other tables are still counted."""
    import psycopg

    sql(source, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    sql(target, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    sql(
        target,
        "INSERT INTO a SELECT generate_series(1, 10); INSERT INTO b SELECT generate_series(1, 10)",
    )
    path = tmp_path / "m.zip"
    make_file(source, path, rules={"user": {"default": "overwrite"}})
    monkeypatch.setenv("MM_PLAN_LOCK_TIMEOUT", "200ms")
    pending = [Difference(table="a", rule="overwrite"), Difference(table="b", rule="overwrite")]
    with psycopg.connect(target) as blocker:
        blocker.execute("LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
        with open_archive(path) as reader:
            found = assess(reader, target, pending)
        blocker.rollback()
    assert found.unchecked == ("a",)
    assert [(t.table, t.deleted) for t in found.losses] == [("b", 10)]
    assert found.model_dump(mode="json")["unchecked"] == ["a"]


# --- in DAG runs, on the NocoBase fixture pair ------------------------------------------------


def test_manual_run_asks_and_a_rejection_stops_before_any_write(
    nocobase_pair: tuple[str, str],
    inbox: Inbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = table_text(prod, "uiSchemas")
    thread = answer_when_asked("migration_sync", "destructive_check", ["Reject"], user="olga")
    dag_run = run_dag(
        "migration_sync",
        {
            **UI_OVERWRITE_ANSWERS,
            "on_destructive": "ask",  # the default of a manual run (run_dag's is continue)
            "notify_conn_id": "mm_smtp",
            "notify_to": ["ops@example.test"],
        },
    )
    assert thread.error is None and thread.answered
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["destructive_check"] == ["failed"]
    assert states["backup"] == ["upstream_failed"] and states["env_write"] == ["upstream_failed"]
    assert table_text(prod, "uiSchemas") == before
    assert (
        scalar(prod, "SELECT count(*) FROM \"environmentVariables\" WHERE name = 'HELPDESK_URL'")
        == 0
    )
    found = xcom_key(dag_run, "destructive_check", "destructive")
    assert found["decision"] == "rejected" and found["refused_by"] == "rejected by olga"
    assert found["parts"] == [UI_OVERWRITE_PART]
    # the question, then the refusal: two messages, the second one names the refused part
    messages = inbox.wait(2)
    assert [m["X-Migration-Event"] for m in messages] == ["question", "refused"]
    assert UI_OVERWRITE_PART in message_body(messages[0]) and UI_OVERWRITE_PART in message_body(
        messages[1]
    )
    assert "rejected by olga" in str(messages[1]["Subject"])


def test_a_pipeline_refuses_a_destructive_plan(
    nocobase_pair: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    before = table_text(prod, "uiSchemas")
    dag = pipeline_dag(
        tmp_path,
        monkeypatch,
        name="destructive_nightly",
        source_conn_id="migration_source",
        target_conn_id="migration_target",
        schedule="0 2 * * *",
        rules=UI_OVERWRITE,
        options={"on_missing_plugins": "continue"},
    )
    assert dag.params["on_destructive"] == "fail"
    from tests.airflowtools import metadata_db

    metadata_db()
    dag_run = dag.test(run_conf={"env_values": UI_OVERWRITE_ANSWERS["env_values"]})
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["destructive_check"] == ["failed"] and states["backup"] == ["upstream_failed"]
    assert table_text(prod, "uiSchemas") == before
    found = xcom_key(dag_run, "destructive_check", "destructive")
    assert found["parts"] == [UI_OVERWRITE_PART] and found["refused_by"] == "on_destructive=fail"


def test_a_destructive_plan_goes_on_when_allowed(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    dag_run = run_dag("migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "continue"})
    assert str(dag_run.state) == "success", task_states(dag_run)
    decided = xcom(dag_run, "destructive_check")
    assert decided["decision"] == "continue (on_destructive=continue)"
    assert decided["parts"] == [UI_OVERWRITE_PART]
    assert table_text(prod, "uiSchemas") == table_text(staging, "uiSchemas")


def test_an_approved_destructive_plan_is_applied_and_the_approval_recorded(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os

    from migration_manager import store_layout

    staging, prod = nocobase_pair
    connect_nocobase_pair(monkeypatch, staging, prod)
    thread = answer_when_asked("migration_sync", "destructive_check", ["Approve"], user="olga")
    dag_run = run_dag("migration_sync", {**UI_OVERWRITE_ANSWERS, "on_destructive": "ask"})
    assert thread.error is None and thread.answered
    assert str(dag_run.state) == "success", task_states(dag_run)
    decided = xcom(dag_run, "destructive_check")
    assert (decided["decision"], decided["decided_by"]) == ("approved", "olga")
    assert table_text(prod, "uiSchemas") == table_text(staging, "uiSchemas")
    # the run's log says who approved what
    store = Path(os.environ["MIGRATION_STORE"].removeprefix("file://"))
    (path,) = store.glob(f"logs/*/{store_layout.safe_component(dag_run.run_id)}/migration.json")
    step = next(
        s for s in json.loads(path.read_text())["steps"] if s["task_id"] == "destructive_check"
    )
    assert step["outcome"]["decided_by"] == "olga" and step["outcome"]["parts"] == [
        UI_OVERWRITE_PART
    ]
    assert f"{UI_OVERWRITE_PART}: approved by olga" in (path.parent / "migration.log").read_text()
