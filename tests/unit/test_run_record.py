"""The run record and its files (migration.json / migration.log / schema.sql / data.sql) from plain data, without Airflow."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from migration_manager import (
    executed_sql,
    redaction,
    run_files,
    run_log_text,
    run_record,
    store_layout,
)
from migration_manager.archive import ArchiveWriter, data_member
from migration_manager.execute.results import UnitResult
from migration_manager.plan_report import PlanReport
from migration_manager.report import summarize
from migration_manager.run_record import Endpoint, MigrationFileInfo, RunRecord
from migration_manager.run_record_build import RunInfo, Step, build_record, describe_file
from migration_manager.signing import SigningKey, generate, trusted_keys
from migration_manager.step_kinds import StepKind
from migration_manager.step_outcomes import outcome_of, recorded

SECRET = "hunter2-do-not-log"

REPORT = PlanReport.model_validate(
    {
        "migration_id": "mig-20261126T120000Z-abc123",
        "migration_file": "mig-20261126T120000Z-abc123",
        "source": "staging",
        "units": [
            {"id": "u1", "label": "roles, rolesUsers", "tables": ["roles", "rolesUsers"]},
            {"id": "u2", "label": "orders", "tables": ["orders"]},
            {"id": "u3", "label": "broken", "tables": ["broken"]},
        ],
        "rules": {
            "roles": "overwrite",
            "rolesUsers": "schema-only",
            "orders": "upsert",
            "broken": "overwrite",
            "users": "skip",
        },
        "quiet_tables": [{"table": "users", "rule": "skip", "status": "skipped"}],
        "warnings": ["legacyThing: the profile does not know it (schema-only)"],
        "pending": [
            {
                "table": "orders",
                "rule": "upsert",
                "changes": ["add column tags", "add index ix_orders_tags"],
            },
            {"table": "roles", "rule": "overwrite", "changes": []},
        ],
    }
)
RESULTS: list[dict[str, Any]] = [
    {
        "unit": "u2",
        "seconds": 0.5,
        "tables": [
            {
                "table": "orders",
                "rule": "upsert",
                "status": "applied",
                "ddl": [
                    "ALTER TABLE public.orders ADD COLUMN tags TEXT[]",
                    "CREATE INDEX ix_orders_tags ON public.orders (tags)",
                ],
                "inserted": 499,
                "updated": 1,
                "deleted": 0,
                "unchanged": 0,
                "seconds": 0.4,
                "warnings": [],
                "data_sql": [
                    'CREATE TEMP TABLE "mm_stage_1" (LIKE "public"."orders")',
                    'COPY "mm_stage_1" ("id", "total") FROM STDIN (FORMAT binary)',
                    'INSERT INTO "public"."orders" SELECT * FROM "mm_stage_1" ON CONFLICT ("id") DO UPDATE SET "total" = EXCLUDED."total"',
                ],
            }
        ],
    },
    {
        "unit": "u1",
        "seconds": 0.2,
        "tables": [
            {
                "table": "roles",
                "rule": "overwrite",
                "status": "applied",
                "ddl": [
                    "CREATE TABLE public.roles (name VARCHAR(255) NOT NULL, PRIMARY KEY (name))"
                ],
                "inserted": 3,
            },
            {
                "table": "rolesUsers",
                "rule": "schema-only",
                "status": "applied",
                "ddl": ['CREATE TABLE public."rolesUsers" ("roleName" VARCHAR(255))'],
            },
        ],
    },
]


def _steps() -> list[Step]:
    t = "2026-11-26T12:00:{:02d}+00:00"
    return [
        Step("plan", "success", start=t.format(2), end=t.format(4), attempt=1),
        Step("env_check", "success", start=t.format(0), end=t.format(1), attempt=1),
        Step(
            "apply_table",
            "success",
            map_index=1,
            label="orders",
            start=t.format(5),
            end=t.format(7),
            attempt=2,
        ),
        Step(
            "apply_table",
            "success",
            map_index=0,
            label="roles, rolesUsers",
            start=t.format(5),
            end=t.format(6),
            attempt=1,
        ),
        Step(
            "apply_table",
            "failed",
            map_index=2,
            label="broken",
            start=t.format(5),
            end=t.format(8),
            attempt=3,
            error=f"broken: connection to postgresql://app:{SECRET}@db:5432/prod failed",
            failed=True,
        ),
        Step(
            "collect_logs",
            "failed",
            start=t.format(9),
            end=t.format(10),
            attempt=1,
            failed=True,
        ),
    ]


def _record(**overrides: Any) -> RunRecord:
    summary = summarize(REPORT, [UnitResult.model_validate(r) for r in RESULTS])
    values: dict[str, Any] = {
        "run": RunInfo(
            dag_id="migration_execute",
            run_id="manual__2026-11-26T12:00:00+00:00",
            run_type="manual",
            triggered_by="olga",
            start_date="2026-11-26T12:00:00+00:00",
        ),
        "steps": _steps(),
        "report": REPORT,
        "summary": summary,
        "migration_file": MigrationFileInfo(
            name="mig-20261126T120000Z-abc123.zip", sha256="ab" * 32, bytes=2048
        ),
        "source": Endpoint(database="staging", app_version="1.6.0"),
        "target": Endpoint(
            conn_id="migration_target", host="db", port=5432, database="prod", user="app"
        ),
        "params": {
            "target_conn_id": "migration_target",
            StepKind.ENV_VALUES: {"API_KEY": SECRET},
            "allow_drop": False,
        },
        "checks": {
            StepKind.ENV_CHECK: {
                "settings": {"DB_SCHEMA": "public"},
                "missing_env": [{"name": "API_KEY", "type": "secret", "referenced": True}],
            },
            "env_values": {
                "rows": [["API_KEY", "secret", "deadbeef" + SECRET]],
                "source": "env_values param",
                "answered_by": None,
            },
            StepKind.PLUGIN_CHECK: {
                "missing": [{"name": "graph", "version": "1.0", "package": "@nocobase/graph"}],
                "decision": "continue (prompt)",
                "decided_by": "olga",
            },
            StepKind.ENV_WRITE: {"written": ["API_KEY"]},
        },
        "backup": {
            "backup_id": "bk-20261126T120003Z-a1b2c3",
            "tables": 12,
            "rows": 345,
            "size": 99999,
        },
        "rollback": {
            "status": "not rolled back",
            "reason": "rollback_on_failure is off",
            "backup_id": "bk-20261126T120003Z-a1b2c3",
        },
        "step_order": ["env_check", "plan", "apply_table", "collect_logs"],
        "ended_at": "2026-11-26T12:00:10+00:00",
    }
    values.update(overrides)
    return build_record(**values)


def _json(record: RunRecord) -> dict[str, Any]:
    """The record as ``migration.json`` holds it."""
    data: dict[str, Any] = json.loads(run_files.render(record)[run_files.RECORD])
    return data


def test_record_has_everything_and_no_secret() -> None:
    model = _record()
    record = _json(model)
    assert record["format"] == "migration-manager-log"
    assert record["migration_id"] == "mig-20261126T120000Z-abc123"
    assert record["status"] == "failed"  # unit u3 never returned a result
    assert record["failed_units"] == [{"id": "u3", "tables": ["broken"]}]
    assert record["seconds"] == 10.0
    assert record["triggered_by"] == "olga"
    # steps ordered by start, then by the DAG's order
    assert [s["name"] for s in record["steps"]][:2] == ["env_check", "plan"]
    names = [s["name"] for s in record["steps"]]
    assert names.index("apply_table[roles, rolesUsers]") < names.index("apply_table[orders]")
    orders = next(s for s in record["steps"] if s["name"] == "apply_table[orders]")
    assert orders["attempt"] == 2 and orders["seconds"] == 2.0 and orders["status"] == "success"
    assert record["units"][2] == {
        "id": "u3",
        "label": "broken",
        "tables": ["broken"],
        "map_index": 2,
        "status": "failed",
    }
    assert record["checks"]["env_values"]["supplied"] == [{"name": "API_KEY", "type": "secret"}]
    assert record["checks"]["plugin_check"]["decided_by"] == "olga"
    assert record["params"]["env_values"] == ["API_KEY"]
    assert record["backup"]["backup_id"].startswith("bk-")
    assert record["rollback"]["status"] == "not rolled back"
    assert record["totals"]["inserted"] == 502 and record["totals"]["ddl"] == 4
    assert any("broken" in e and "***" in e for e in record["errors"])
    for name, text in run_files.render(model).items():
        assert SECRET not in text, name
        assert "deadbeef" not in text, name


def test_log_text_reads_top_to_bottom() -> None:
    text = run_log_text.format_log(_record())
    assert text.startswith("Migration mig-20261126T120000Z-abc123: FAILED\n")
    for expected in (
        "triggered by olga",
        "Target      migration_target: app@db:5432/prod",
        "Backup      bk-20261126T120003Z-a1b2c3 (12 tables, 345 rows, 97.7 KB)",
        "Rollback    not rolled back to bk-20261126T120003Z-a1b2c3 (rollback_on_failure is off)",
        "apply_table[orders]",
        "Plugins           missing in the target: graph; decision: continue (prompt) by olga",
        "Values supplied   API_KEY (secret) from the env_values param (values not recorded)",
        "! failed unit u3: broken (rolled back)",
        "legacyThing: the profile does not know it",
    ):
        assert expected in text, expected
    process = text.split("Process\n-------\n")[1].split("\n\n")[0].splitlines()
    assert process[0].split() == [
        "#",
        "step",
        "status",
        "try",
        "start",
        "end",
        "seconds",
        "outcome",
    ]
    assert process[1].split() == ["1", "env_check", "success", "1", "12:00:00", "12:00:01", "1.00"]


def test_schema_sql_is_in_order_grouped_and_runs(tmp_path: Path) -> None:
    """The statements of each table, units in plan order, tables referenced-first; psql runs it."""
    text = executed_sql.schema_sql(_record())
    roles = text.index("-- Table roles:")
    roles_users = text.index("-- Table rolesUsers:")
    orders = text.index("-- Table orders:")
    assert roles < roles_users < orders
    assert text.index("ADD COLUMN tags") < text.index("CREATE INDEX ix_orders_tags")
    assert text.count("BEGIN;") == 2 and text.count("COMMIT;") == 2
    assert "mm_stage" not in text  # data statements live in data.sql
    body = [line for line in text.splitlines() if line and not line.startswith("--")]
    assert all(line.endswith(";") for line in body)
    data = executed_sql.data_sql(_record())
    assert 'COPY "mm_stage_1" ("id", "total") FROM STDIN (FORMAT binary);' in data
    assert "ALTER TABLE" not in data


@pytest.mark.postgres
def test_schema_sql_runs_with_psql(new_db: Any) -> None:
    from tests.pgtools import psql_bin, scalar

    dsn = new_db()
    record = _record()
    # a plausible script: the orders table exists before its ALTER
    script = (
        "CREATE TABLE public.orders (id int PRIMARY KEY, total numeric);\n"
        + executed_sql.schema_sql(record)
    )
    out = subprocess.run(
        [psql_bin(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        input=script,
        text=True,
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr
    assert scalar(dsn, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_orders_tags'") == 1


def test_run_stopped_before_the_plan_is_logged() -> None:
    steps = [
        Step(
            "env_check",
            "failed",
            start="2026-11-26T12:00:00+00:00",
            end="2026-11-26T12:00:01+00:00",
            attempt=1,
            error="DB_TABLE_PREFIX differs: 'nb_' in the target, '' in the source",
            failed=True,
        ),
        Step("plan", "upstream_failed", failed=True),
        Step("apply_table", "upstream_failed", failed=True),
    ]
    model = build_record(
        run=RunInfo(dag_id="migration_execute", run_id="r1"),
        steps=steps,
        migration_file=MigrationFileInfo(name="mig-x.zip", id="mig-x", sha256="cd" * 32),
    )
    record = _json(model)
    assert record["status"] == "failed" and record["migration_id"] == "mig-x"
    assert record["tables"] == [] and record["units"] == []
    files = run_files.render(model)
    assert "the run stopped before the plan" in files[run_files.LOG]
    assert "env_check: DB_TABLE_PREFIX differs" in files[run_files.LOG]
    assert "-- No schema statement was executed." in files[run_files.SCHEMA_SQL]
    plan = next(s for s in record["steps"] if s["task_id"] == "plan")
    assert plan["start"] is None and plan["seconds"] is None


def test_scrub_removes_credentials() -> None:
    assert redaction.redact("postgresql://app:pw@db/x") == "postgresql://app:***@db/x"
    assert redaction.redact("host=db password=pw user=app") == "host=db password=*** user=app"
    assert redaction.redact('{"password": "pw"}') == '{"password": "***"}'
    assert redaction.redact("no secrets here") == "no secrets here"


def test_unknown_step_outcomes_are_not_recorded() -> None:
    assert outcome_of(StepKind.of("some_custom_task"), {"token": SECRET}) is None
    values = outcome_of(StepKind.ENV_VALUES, {"rows": [["K", "secret", SECRET]]})
    assert values is not None and values.model_dump(exclude_unset=True) == {
        "supplied": [{"name": "K", "type": "secret"}],
        "source": None,
        "answered_by": None,
    }
    assert SECRET not in values.model_dump_json()


def test_write_files_and_load(tmp_path: Path) -> None:
    record = _record()
    written = run_files.write_files(tmp_path / "logs" / "m" / "r", record)
    assert [p.name for p in written] == [
        "migration.log",
        "schema.sql",
        "data.sql",
        "summary.json",
        "migration.json",
    ]
    text = (tmp_path / "logs" / "m" / "r" / "migration.json").read_text()
    loaded = run_record.read_record(text)
    assert loaded == record and loaded.to_json_dict() == _json(record)
    assert json.loads(text) == _json(record)
    summary = json.loads((tmp_path / "logs" / "m" / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["backup"]["backup_id"].startswith("bk-")
    with pytest.raises(ValueError):
        run_record.read_record('{"format": "something else"}')


def _archive(path: Path, manifest_id: str = "mig-1", signing_key: Any = None) -> Path:
    """A valid migration file: one table ``t`` with 7 rows (the manifest as the reader's model wants)."""
    from tests.factories import manifest_table

    buf = io.BytesIO()
    writer = ArchiveWriter(buf)
    with writer.data(data_member(1)) as out:
        out.write(b"rows")
    data = {
        "member": data_member(1),
        "columns": ["x_uid"],
        "rows": 7,
        "raw_bytes": 4,
        "format": "binary",
    }
    writer.finish(
        {
            "format": "migration-manager",
            "format_version": 1,
            "id": manifest_id,
            "created_at": "2026-11-26T12:00:00+00:00",
            "tool_version": "0.1.0",
            "profile": "generic",
            "rules": {
                "system": {"default": "profile", "independent": {}},
                "user": {"default": "schema-only", "independent": {}},
            },
            "source": {
                "database": "staging",
                "server_version": "15.4",
                "app_version": None,
                "app_settings": {},
                "schema": "public",
                "table_prefix": "",
            },
            "environment": {"variables": [], "referenced_unknown": []},
            "plugins": [],
            "tables": [manifest_table("t", "overwrite", data)],
            "units": [{"id": "u1", "tables": ["t"], "label": "t"}],
            "warnings": [],
            "members": writer.members,
        },
        signing_key,
    )
    path.write_bytes(buf.getvalue())
    return path


def test_describe_file(tmp_path: Path) -> None:
    path = _archive(tmp_path / "mig-1.zip")
    info = describe_file(path)
    assert info.id == "mig-1" and info.rows == 7 and info.tables == 1
    assert info.bytes == path.stat().st_size and len(info.sha256 or "") == 64
    with zipfile.ZipFile(path) as zf:
        assert info.manifest_sha256 == zf.read("manifest.json.sha256").decode().strip()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    unreadable = describe_file(bad).to_json_dict()
    assert set(unreadable) == {"uri", "name", "error"} and unreadable["name"] == "bad.zip"


def test_describe_file_names_the_trusted_signer_or_the_unsigned_acceptance(tmp_path: Path) -> None:
    key = SigningKey("whatever-the-file-claims", generate().private_key)
    trusted = trusted_keys({"release-team": key.public_pem()})
    signed = _archive(tmp_path / "signed.zip", signing_key=key)

    info = describe_file(signed, keys=trusted)
    assert info.signature is not None
    sig = info.signature.to_json_dict()
    assert (sig["status"], sig["signer"], sig["key_id"]) == ("verified", "release-team", key.key_id)
    assert sig["claimed_signer"] == "whatever-the-file-claims" and sig["accepted"] is True
    assert sig["shown"] == f"signed by release-team (trusted key {key.key_id})"
    record = build_record(run=RunInfo(dag_id="migration_execute"), steps=[], migration_file=info)
    text = run_log_text.format_log(record)
    assert f"Signature   signed by release-team (trusted key {key.key_id})" in text
    assert _json(record)["migration_file"]["signature"]["signer"] == "release-team"

    unsigned = _archive(tmp_path / "unsigned.zip")
    allowed = describe_file(unsigned, keys=trusted, allow_unsigned=True).signature
    assert allowed is not None
    assert (allowed.status, allowed.signer, allowed.accepted) == ("unsigned", None, True)
    assert allowed.shown == "unsigned; accepted because allow_unsigned is set"
    assert (
        "Signature   unsigned; accepted because allow_unsigned is set"
        in run_log_text.format_log(
            build_record(
                run=RunInfo(),
                steps=[],
                migration_file=describe_file(unsigned, allow_unsigned=True),
            )
        )
    )

    # a key nobody trusts: not accepted without allow_unsigned, and the claim is not the signer
    other = trusted_keys({"someone-else": generate().public_pem()})
    untrusted = describe_file(signed, keys=other).signature
    assert untrusted is not None
    assert untrusted.status == "untrusted" and untrusted.signer is None
    assert untrusted.accepted is False and (untrusted.shown or "").endswith(
        "not accepted (allow_unsigned is off)"
    )


def test_safe_component() -> None:
    assert (
        store_layout.safe_component("manual__2026-11-26T12:00:00+00:00")
        == "manual__2026-11-26T12_00_00_00_00"
    )
    assert store_layout.safe_component("../..") == "_"
    assert "/" not in store_layout.safe_component("a/../b")


def test_a_skip_reason_is_a_note_not_an_error() -> None:
    steps = [
        Step("rollback", "skipped", note="No apply_table unit failed: nothing to roll back"),
        Step("apply_table", "upstream_failed", error="upstream", failed=True),
    ]
    record = _json(build_record(run=RunInfo(run_id="r"), steps=steps))
    assert record["errors"] == ["apply_table: upstream"]
    rollback = next(s for s in record["steps"] if s["task_id"] == "rollback")
    assert rollback["note"].startswith("No apply_table unit failed")


def test_outcomes_in_a_few_words() -> None:
    unit = outcome_of(StepKind.APPLY_UNIT, RESULTS[0])
    assert unit is not None and unit.describe() == "orders: +499 ~1 -0 =0 rows, 2 DDL"
    checks = _record().checks
    assert checks["env_check"].describe() == "settings match; the target lacks API_KEY (secret)"
    assert checks["plugin_check"].describe() == "missing graph: continue (prompt) by olga"
    assert checks["env_values"].describe() == "API_KEY (secret) from the env_values param"
    plan = recorded("plan", {"units": ["a", "b"]})
    assert plan is not None and plan.describe() == "2 unit(s) to apply"
    assert recorded("anything", None) is None
    other = recorded("custom_task", {"rows": 3})
    assert other is not None and other.describe() == "rows=3"


def test_differences_found_by_the_plan() -> None:
    record = _record()
    assert _json(record)["differences"] == [
        {
            "table": "orders",
            "rule": "upsert",
            "changes": ["add column tags", "add index ix_orders_tags"],
        }
    ]
    text = run_log_text.format_log(record)
    assert "Differences found by the plan" in text
    assert "  orders (upsert):\n    - add column tags\n    - add index ix_orders_tags" in text
    plan = REPORT.outcome()
    assert plan.model_dump()["unchanged"] == 1
    assert plan.describe() == ("3 unit(s) to apply; structure differences in 1 table(s)")
