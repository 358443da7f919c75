"""Many small units packed into few apply_table tasks (issue 20), under ``dag.test()`` on real
PostgreSQL: a failing unit fails its task while the task's other units are applied and
reported; clearing the task after the cause is fixed applies only the unit that failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.airflowtools import connection_uri, rerun_cleared, task_states, xcom
from tests.integration.test_rollback_dags import Logs, _conn_id
from tests.pgtools import rows, sql

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

COUNT = 12
BAD = "t07"


@pytest.fixture
def logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Logs:
    return Logs(capfd, caplog)


def _tables(dsn: str, *, bad_text: bool = False) -> None:
    statements = []
    for i in range(1, COUNT + 1):
        name = f"t{i:02d}"
        kind = "text" if bad_text and name == BAD else "integer"
        statements.append(
            f"CREATE TABLE {name} (id int PRIMARY KEY, v {kind});"
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
    conn_id = _conn_id(monkeypatch, target)
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
