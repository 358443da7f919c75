"""Many small units packed into few apply_table tasks (issue 20), under ``dag.test()`` on real
PostgreSQL: a failing unit fails its task while the task's other units are applied and
reported; clearing the task after the cause is fixed applies only the unit that failed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import connection_uri, rerun_cleared, task_states, xcom
from tests.integration.dagrun_tools import Logs, target_conn_id
from tests.pgtools import rows, sql

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

COUNT = 12
BAD = "t07"


def _tables(dsn: str, *, bad_text: bool = False) -> None:
    statements = []
    for i in range(1, COUNT + 1):
        name = f"t{i:02d}"
        kind = "text" if bad_text and name == BAD else "integer"
        # a text that looks like a Jinja template is data: never rendered by the task
        note = ", note text DEFAULT '{{ 7 * 7 }}'" if i == 1 else ""
        statements.append(
            f"CREATE TABLE {name} (id int PRIMARY KEY, v {kind}{note});"
            f"INSERT INTO {name} SELECT g, g * {i} FROM generate_series(1, 25) g;"
        )
    sql(dsn, "\n".join(statements))


def _logged(run_id: str) -> tuple[dict, dict]:
    """The run's summary.json and migration.json in the store."""
    root = Path(os.environ["MIGRATION_STORE"].removeprefix("file://")) / "logs"
    for path in root.glob("*/*/migration.json"):
        record = json.loads(path.read_text())
        if record.get("run_id") == run_id:
            return json.loads((path.parent / "summary.json").read_text()), record
    raise AssertionError(f"no run log of {run_id}")


def test_a_failing_unit_in_a_packed_task_and_a_clear_that_applies_only_it(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    _tables(source)
    # the target's t07 holds text the source's integer column cannot take: its unit fails
    sql(
        target,
        f"CREATE TABLE {BAD} (id int PRIMARY KEY, v text); INSERT INTO {BAD} VALUES (1, 'seven');",
    )
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source))
    conn_id = target_conn_id(monkeypatch, target)
    dag_run = logs.run(
        "migration_sync",
        {
            "profile": "generic",
            "rules": {"user": {"default": "overwrite"}},
            "target_conn_id": conn_id,
            "max_apply_tasks": 3,
            "rollback_on_failure": False,  # keep what the other units applied
        },
    )

    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert sorted(states["apply_table"]) == ["failed", "success", "success"]
    planned = xcom(dag_run, "plan")
    assert len(planned) == 3 and sum(len(t["units"]) for t in planned) == COUNT
    failed_index = next(i for i, t in enumerate(planned) if BAD in t["label"])
    assert len(planned[failed_index]["units"]) == COUNT // 3
    # the failed task applied its other units and pushed their results
    pushed = xcom(dag_run, "apply_table", failed_index)
    packed = [u["tables"][0] for u in planned[failed_index]["units"]]
    assert sorted(r["tables"][0]["table"] for r in pushed) == sorted(set(packed) - {BAD})
    assert all(r["tables"][0]["inserted"] == 25 for r in pushed)
    for name in set(packed) - {BAD}:
        assert rows(target, f"SELECT count(*) FROM {name}") == [(25,)]
    assert rows(target, f"SELECT v FROM {BAD}") == [("seven",)]  # rolled back
    default = "SELECT column_default FROM information_schema.columns WHERE column_name = 'note'"
    assert rows(target, default) == rows(source, default) == [("'{{ 7 * 7 }}'::text",)]
    assert f"{BAD} (overwrite): {BAD}: invalid input syntax for type integer" in logs.text
    # collect_logs reports every table: 11 applied, t07 failed
    summary, record = _logged(dag_run.run_id)
    by_table = {t["table"]: t for t in summary["tables"]}
    assert len(by_table) == COUNT
    assert by_table[BAD]["status"] == "failed"
    assert {t["status"] for n, t in by_table.items() if n != BAD} == {"applied"}
    assert summary["failed_units"] == [
        {"id": u["id"], "tables": [BAD]}
        for u in planned[failed_index]["units"]
        if u["tables"] == [BAD]
    ]
    steps = {s["name"]: s for s in record["steps"] if s["task_id"] == "apply_table"}
    failed_step = steps[f"apply_table[{planned[failed_index]['label']}]"]
    assert failed_step["status"] == "failed" and BAD in failed_step["error"]
    assert len(failed_step["outcome"]["tables"]) == COUNT // 3 - 1
    assert {u["map_index"] for u in record["units"] if u["tables"] == [BAD]} == {failed_index}

    # the cause fixed, the failed task cleared: only t07 is applied; the others are reported
    # from the first try (a re-apply would find them unchanged: 0 inserted)
    sql(target, f"DELETE FROM {BAD}")
    again = rerun_cleared(dag_run, ("apply_table", failed_index), ("collect_logs", -1))

    assert str(again.state) == "success", task_states(again)
    results = xcom(again, "apply_table", failed_index)
    assert sorted(r["tables"][0]["table"] for r in results) == sorted(packed)
    assert all(r["tables"][0]["inserted"] == 25 for r in results)
    assert rows(target, f"SELECT count(*), sum(v) FROM {BAD}") == [(25, 7 * 325)]
    summary, _ = _logged(again.run_id)
    assert summary["status"] == "success" and len(summary["tables"]) == COUNT
    assert {t["status"] for t in summary["tables"]} == {"applied"}


def test_the_plan_xcom_for_1000_tables_stays_small(source: str, target: str) -> None:
    """What ``plan`` pushes for a first sync of 1,000 small tables: the report (every table's
    rule and unit, no structures) and, per apply_table task, only its own units' entries."""
    import io

    from migration_manager.archive import ArchiveReader
    from migration_manager.create import create_migration
    from migration_manager.execute import prepare, table_bytes, unit_entries
    from migration_manager.plan import pack_units
    from migration_manager.plan_report import PlanReport, planned_tasks

    count = 1000
    sql(
        source,
        f"""DO $$ BEGIN FOR i IN 1..{count} LOOP
              EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, name text, n integer)',
                             't' || lpad(i::text, 4, '0'));
              EXECUTE format('INSERT INTO %I SELECT g, ''n'' || g, g FROM generate_series(1, 25) g',
                             't' || lpad(i::text, 4, '0'));
            END LOOP; END $$;""",
    )
    buf = io.BytesIO()
    create_migration(source, buf, profile="generic", rules={"user": {"default": "overwrite"}})
    buf.seek(0)
    with ArchiveReader(buf, name="m.zip") as reader:
        plan = prepare(reader, target)
        manifest = reader.manifest
        entries = {u.id: unit_entries(reader, u) for u in plan.units}
    sizes = {t.name: table_bytes(t) for t in manifest.tables}
    tasks = pack_units(plan.units, sizes, 4)
    report = PlanReport(
        migration_id=plan.migration_id,
        migration_file="m.zip",
        source=None,
        units=plan.units,
        rules={t.name: t.rule for t in manifest.tables},
        pending=plan.pending,
        target_fingerprints=dict(plan.target_fingerprints),
        tasks=tuple(tuple(u.id for u in t) for t in tasks),
    )
    pushed = [t.model_dump(mode="json") for t in planned_tasks(plan, tasks, entries, "m.zip")]

    report_bytes = len(json.dumps(report.model_dump(mode="json")))
    task_bytes = [len(json.dumps(t)) for t in pushed]
    per_table = max(b / len(t["units"]) for b, t in zip(task_bytes, pushed, strict=True))
    print(
        f"plan XCom, {count} tables: report {report_bytes / 1024:.0f} KiB, "
        f"{len(pushed)} tasks of {', '.join(f'{b / 1024:.0f}' for b in task_bytes)} KiB "
        f"({per_table:.0f} bytes per one-table unit)"
    )
    assert len(pushed) == 4 and sum(len(t["units"]) for t in pushed) == count
    # the report holds no table structure; about 250 bytes per table here
    assert "structure" not in json.dumps(report.model_dump(mode="json"))
    assert report_bytes < 400 * count
    # each task carries its own units' entries only: its tables' structures and no other
    for task in pushed:
        own = {name for u in task["units"] for name in u["tables"]}
        assert {name for u in task["units"] for name in u["entries"]} == own
    assert per_table < 2500
    assert sum(task_bytes) < 2500 * count


def _many(dsn: str, count: int) -> None:
    sql(
        dsn,
        f"""DO $$ BEGIN FOR i IN 1..{count} LOOP
              EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, name text, n integer)',
                             't' || lpad(i::text, 4, '0'));
              EXECUTE format('INSERT INTO %I SELECT g, ''n'' || g, g FROM generate_series(1, 25) g',
                             't' || lpad(i::text, 4, '0'));
            END LOOP; END $$;""",
    )


@pytest.mark.parametrize("changed", [0, 1])
def test_a_plan_with_nothing_or_one_table_changed_reflects_once_and_queries_per_table(
    source: str, monkeypatch: pytest.MonkeyPatch, changed: int
) -> None:
    """400 tables equal in the target (a copy of the source), or one of them changed: the plan
    reflects the target once and sends a bounded number of queries per table."""
    import io
    import sys
    import uuid

    import psycopg

    from migration_manager.archive import ArchiveReader
    from migration_manager.create import create_migration
    from migration_manager.execute import prepare
    from tests.pgtools import drop_database, dsn_for

    count = 400
    _many(source, count)
    buf = io.BytesIO()
    create_migration(source, buf, profile="generic", rules={"user": {"default": "overwrite"}})
    copy = f"mmtest_copy_{uuid.uuid4().hex[:10]}"
    sql(dsn_for("postgres"), f'CREATE DATABASE "{copy}" TEMPLATE "{source.rsplit("/", 1)[-1]}"')
    try:
        target = dsn_for(copy)
        if changed:
            sql(target, "UPDATE t0200 SET name = 'changed' WHERE id = 3")
        module = sys.modules["migration_manager.execute.prepare"]
        reflections: list[int] = []
        real_reflect = module.reflect_target
        monkeypatch.setattr(
            module, "reflect_target", lambda *a, **k: reflections.append(1) or real_reflect(*a, **k)
        )
        queries: list[str] = []
        real_execute = psycopg.Cursor.execute

        def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            queries.append(str(query)[:120])
            return real_execute(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted)
        buf.seek(0)
        with ArchiveReader(buf, name="m.zip") as reader:
            plan = prepare(reader, target)
        monkeypatch.undo()
    finally:
        drop_database(copy)
    print(
        f"{count} tables, {changed} changed: {len(queries)} queries, {len(reflections)} reflection"
    )
    assert [u.tables for u in plan.units] == ([("t0200",)] if changed else [])
    assert len(reflections) == 1
    scans = [q for q in queries if "hashtextextended" in q]
    # one fingerprint scan per table; the rest: catalog lookups, savepoints, settings
    assert len(scans) == count, len(scans)
    assert len(queries) <= 9 * count + 50, len(queries)
