"""``dry_run``: the same run log as a real run, nothing committed; its counts equal the real run's."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import connection_uri, run_dag, task_states
from tests.mailtools import Inbox
from tests.pgtools import make_file, scalar, sql, table_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

SOURCE = """
CREATE TABLE settings (id int PRIMARY KEY, v text, added text DEFAULT 'x');
INSERT INTO settings SELECT g, 'source ' || g, 'a' || g FROM generate_series(1, 30) g;
CREATE TABLE pages (id int PRIMARY KEY, title text);
INSERT INTO pages SELECT g, 'page ' || g FROM generate_series(1, 12) g;
CREATE TABLE fresh (id int PRIMARY KEY, note text);
INSERT INTO fresh VALUES (1, 'only in the source'), (2, 'also');
"""
# settings: 20 common ids, 10 new, 5 target-only, a column to add; pages equal; fresh is new
TARGET = """
CREATE TABLE settings (id int PRIMARY KEY, v text);
INSERT INTO settings SELECT g, CASE WHEN g <= 10 THEN 'target ' || g ELSE 'source ' || g END
  FROM generate_series(1, 20) g;
INSERT INTO settings SELECT g, 'extra ' || g FROM generate_series(101, 105) g;
CREATE TABLE pages (id int PRIMARY KEY, title text);
INSERT INTO pages SELECT g, 'page ' || g FROM generate_series(1, 12) g;
"""
COUNTS = (
    "rule",
    "status",
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "ddl",
    "inserted_keys",
    "updated_keys",
    "deleted_keys",
)


def _store() -> Path:
    return Path(os.environ["MIGRATION_STORE"].removeprefix("file://"))


def _log(dag_run: Any) -> tuple[dict[str, Any], Path]:
    from migration_manager import store_layout

    (folder,) = _store().glob(f"logs/*/{store_layout.safe_component(dag_run.run_id)}")
    return json.loads((folder / "migration.json").read_text()), folder


def _tables(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["table"]: {k: t.get(k) for k in COUNTS} for t in record["tables"]}


def test_dry_run_counts_equal_the_real_run_that_follows(
    source: str,
    target: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inbox: Inbox,
) -> None:
    sql(source, SOURCE)
    sql(target, TARGET)
    conn_id = f"mm_dry_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_uri(target))
    file = tmp_path / "dry.zip"
    make_file(source, file, rules={"user": {"default": "overwrite"}})
    before = {t: table_text(target, t) for t in ("settings", "pages")}
    conf = {"migration_file": str(file), "target_conn_id": conn_id}

    dry = run_dag("migration_execute", {**conf, "dry_run": True})

    assert str(dry.state) == "success", task_states(dry)
    # nothing committed: same rows, no new table or column, no backup
    assert {t: table_text(target, t) for t in before} == before
    assert scalar(target, "SELECT to_regclass('public.fresh')") is None
    assert (
        scalar(
            target, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'added'"
        )
        == 0
    )
    assert task_states(dry)["backup"] == ["success"]  # ran, took none
    assert not (_store() / "backups" / conn_id).exists()
    dry_record, dry_folder = _log(dry)
    assert dry_record["dry_run"] is True
    assert "DRY RUN" in (dry_folder / "migration.log").read_text().splitlines()[0]
    assert json.loads((dry_folder / "summary.json").read_text())["dry_run"] is True
    # the page's Preview on target finds a dry run's result by its run id
    from migration_manager.ui import catalog

    assert catalog.find_run(_store(), dry.run_id).run == dry_folder.name

    notify = {"notify_conn_id": "mm_smtp", "notify_to": ["ops@example.test"]}
    real = run_dag("migration_execute", {**conf, **notify, "notify_events": ["success"]})

    assert str(real.state) == "success", task_states(real)
    real_record, _ = _log(real)
    assert real_record["dry_run"] is False
    dry_tables, real_tables = _tables(dry_record), _tables(real_record)
    assert dry_tables == real_tables
    # and they are what the data says: settings +10 new, the 20 common rows updated (the new
    # column `added` gets the source's values), the 5 target-only rows deleted
    s = real_tables["settings"]
    assert (s["inserted"], s["updated"], s["deleted"], s["unchanged"]) == (10, 20, 5, 0)
    # the same sample keys (the dry run's equal the real run's, compared above): keys only
    assert s["inserted_keys"] == [str(i) for i in range(21, 31)]
    assert s["updated_keys"] == [str(i) for i in range(1, 21)]
    assert s["deleted_keys"] == [str(i) for i in range(101, 106)]
    assert real_tables["fresh"]["inserted_keys"] == ["1", "2"]
    assert (
        "settings deleted (5 of 5): 101, 102, 103, 104, 105"
        in (dry_folder / "migration.log").read_text()
    )
    assert real_tables["fresh"]["inserted"] == 2 and len(real_tables["fresh"]["ddl"]) >= 1
    assert real_tables["pages"]["status"] == "unchanged" and real_tables["pages"]["unchanged"] == 12
    assert table_text(target, "settings") == table_text(source, "settings")
    assert (_store() / "backups" / conn_id).exists()  # the real run took its backup
    (msg,) = inbox.wait(1)  # the success, asked for
    assert msg["X-Migration-Event"] == "success"
    assert (
        f"Migration migration_execute into {conn_id} succeeded: 3 tables: +12 ~20 -5 rows"
        in str(msg["Subject"])
    )


def test_a_dry_run_of_the_nocobase_sync_asks_nothing_commits_nothing_and_counts_the_real_run(
    nocobase_pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prod lacks two env variables and a plugin, and the plan is destructive: a real manual run
    would ask three questions; a dry run reports them and goes through, prod untouched. The
    real sync that follows (questions answered up front) does exactly what the dry run said."""
    from tests.airflowtools import xcom
    from tests.pgtools import FIXTURES, rows

    staging, prod = nocobase_pair
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
    prod_key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
    monkeypatch.setenv(
        "AIRFLOW_CONN_MIGRATION_TARGET", connection_uri(prod, {"APP_AES_SECRET_KEY": prod_key})
    )
    tables = [
        r[0] for r in rows(prod, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    before = {t: table_text(prod, t) for t in tables}

    dag_run = run_dag("migration_sync", {"dry_run": True, "on_destructive": "ask"})

    assert str(dag_run.state) == "success", task_states(dag_run)
    assert {t: table_text(prod, t) for t in tables} == before
    assert xcom(dag_run, "destructive_check")["decision"] == "dry run: not asked"
    assert xcom(dag_run, "plugin_check")["decision"] == "continue (on_missing_plugins=continue)"
    assert sorted(xcom(dag_run, "env_values")["not_asked"]) == ["HELPDESK_KEY", "HELPDESK_URL"]
    assert xcom(dag_run, "env_write") == {"written": []}
    record, _ = _log(dag_run)
    assert record["dry_run"] is True
    # the preview's migration file is marked as one (pruned to the newest few)
    assert str(xcom(dag_run, "create_migration_file")).endswith(".preview.zip")
    assert record["migration_file"]["name"].endswith(".preview.zip")
    ui = next(t for t in record["tables"] if t["table"] == "uiSchemas")
    assert ui["deleted"] == 63 and ui["inserted"] > 0  # what the real run would do

    answers = {
        "env_values": {"HELPDESK_URL": "https://helpdesk.prod.invalid", "HELPDESK_KEY": "k"},
        "on_missing_plugins": "continue",
        "on_destructive": "continue",
    }
    real = run_dag("migration_sync", answers)

    assert str(real.state) == "success", task_states(real)
    real_record, _ = _log(real)
    assert real_record["dry_run"] is False
    dry_tables, real_tables = _tables(record), _tables(real_record)
    assert len(real_tables) > 30  # the fixture's first sync has work in dozens of tables
    assert dry_tables == real_tables
    assert table_text(prod, "uiSchemas") == table_text(staging, "uiSchemas")


def test_a_dry_run_takes_the_target_lock_only_for_each_unit_s_transaction(
    source: str, target: str, tmp_path: Path
) -> None:
    """A dry run's ``hold_target_lock`` takes nothing: a real run holding the target does not
    keep it from starting, and it does not keep a real run from the target except while one of
    its units is inside its (rolled-back) transaction, under the lock as any writer. The
    target ends untouched."""
    import logging
    import threading
    import time
    from types import SimpleNamespace

    from migration_manager import target_lock
    from migration_manager.airflow.lock_operators import HoldTargetLockOperator, target_write_lock
    from migration_manager.archive import open_archive
    from migration_manager.execute import apply_unit, prepare

    sql(source, SOURCE)
    sql(target, TARGET)
    file = tmp_path / "dry.zip"
    make_file(source, file, rules={"user": {"default": "overwrite"}})
    before = table_text(target, "settings")
    real = target_lock.DagRunRef("migration_execute", "manual__real")
    dry_ref = target_lock.DagRunRef("migration_execute", "manual__dry")
    context: Any = {
        "params": {"dry_run": True, "target_lock_timeout": 30},
        "dag": SimpleNamespace(dag_id=dry_ref.dag_id),
        "run_id": dry_ref.run_id,
    }
    log = logging.getLogger("test")
    hold = HoldTargetLockOperator(
        task_id="hold_target_lock", target_conn_id="unused_by_a_dry_run", writers=[]
    )

    with target_lock.hold_run_lock(target, real, timeout=1):
        started = time.monotonic()
        assert hold.execute(context) == {
            "waited_seconds": 0.0,
            "held_seconds": 0.0,
            "dry_run": True,
        }
        assert time.monotonic() - started < 1  # did not wait for the real run
        with open_archive(file) as reader:
            plan = prepare(reader, target)
        assert plan.units
        # a unit waits for the real run's writes, like any writer (here: 1 s, then fails)
        with (
            pytest.raises(target_lock.TargetLockedError, match="manual__real"),
            target_lock.write_lock(target, dry_ref, timeout=1, poll=0.1),
        ):
            pass

    # the real run is done; the dry run's units run, each under the lock for its transaction
    in_unit = threading.Event()
    leave = threading.Event()
    results = []

    def dry_units() -> None:
        with open_archive(file) as reader:
            for i, unit in enumerate(plan.units):
                with target_write_lock(context, target, log):
                    results.append(apply_unit(reader, target, unit, dry_run=True))
                    if i == 0:
                        in_unit.set()
                        leave.wait(20)

    thread = threading.Thread(target=dry_units)
    thread.start()
    assert in_unit.wait(20)
    who = _owner(target)
    assert who is not None and who.role == target_lock.WRITE and who.run == str(dry_ref)
    # a real run asking now waits for that unit only
    waited: list[float] = []

    def real_run() -> None:
        t0 = time.monotonic()
        with target_lock.hold_run_lock(target, real, timeout=30, poll=0.1):
            waited.append(time.monotonic() - t0)

    other = threading.Thread(target=real_run)
    other.start()
    time.sleep(0.5)
    assert not waited  # blocked while the dry run's unit is inside its transaction
    leave.set()
    thread.join(30)
    other.join(30)
    assert waited and 0.5 <= waited[0] < 10
    assert len(results) == len(plan.units)
    assert any(t.inserted or t.deleted for r in results for t in r.tables)  # it did the work
    assert table_text(target, "settings") == before  # and committed nothing
    assert scalar(target, "SELECT to_regclass('public.fresh')") is None
    assert _owner(target) is None


def _owner(dsn: str) -> Any:
    import psycopg

    from migration_manager.target_lock import owner

    with psycopg.connect(dsn, autocommit=True) as conn:
        return owner(conn)
