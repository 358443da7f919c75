"""migration_execute checks the file's signature in every task that opens it (``dag.test()``).

The test session trusts one key (conftest.py: Variable ``migration_trusted_keys``), and
``migration_create`` signs with it (connection ``migration_signing``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from migration_manager.signing import SIGNATURE_MEMBER
from tests.airflowtools import run_dag, set_connections, task_states, xcom
from tests.integration.dagrun_tools import log_folder, run_record
from tests.pgtools import REPO, make_file, rows, sql, table_text

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

SOURCE = """
CREATE TABLE items (id integer PRIMARY KEY, name text);
INSERT INTO items SELECT g, 'source ' || g FROM generate_series(1, 50) g;
"""


def test_an_unsigned_file_is_refused_before_anything_runs_unless_allow_unsigned(
    source: str, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(source, SOURCE)
    sql(target, "CREATE TABLE items (id integer PRIMARY KEY, name text)")
    set_connections(monkeypatch, migration_target=target)
    unsigned = tmp_path / "unsigned.zip"
    make_file(source, unsigned, rules={"user": {"default": "overwrite"}}, signing_key=None)
    with zipfile.ZipFile(unsigned) as z:
        assert SIGNATURE_MEMBER not in z.namelist()

    refused = run_dag("migration_execute", {"migration_file": str(unsigned)})
    assert str(refused.state) == "failed"
    states = task_states(refused)
    assert states["env_check"] == ["failed"]  # the first task that opens the file
    assert states["plan"] == ["upstream_failed"]
    assert rows(target, "SELECT count(*) FROM items") == [(0,)]
    refused_sig = run_record(log_folder(refused))["migration_file"]["signature"]
    assert (refused_sig["status"], refused_sig["accepted"]) == ("unsigned", False)

    allowed = run_dag(
        "migration_execute", {"migration_file": str(unsigned), "allow_unsigned": True}
    )
    assert str(allowed.state) == "success", task_states(allowed)
    assert table_text(target, "items") == table_text(source, "items")
    # the run log says the file was accepted unsigned under allow_unsigned
    folder = log_folder(allowed)
    signature = run_record(folder)["migration_file"]["signature"]
    assert signature["status"] == "unsigned" and signature["signer"] is None
    assert signature["allow_unsigned"] is True and signature["accepted"] is True
    assert (
        "Signature   unsigned; accepted because allow_unsigned is set"
        in (folder / "migration.log").read_text()
    )


def test_migration_create_signs_with_the_signing_connection(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql(source, SOURCE)
    set_connections(monkeypatch, migration_source=source)
    created = run_dag("migration_create", {"profile": "generic"})
    assert str(created.state) == "success", task_states(created)
    uri = xcom(created, "create_migration_file")
    with zipfile.ZipFile(uri.removeprefix("file://")) as z:
        signature = json.loads(z.read(SIGNATURE_MEMBER))
    assert signature["signer"] == "test-suite" and signature["algorithm"] == "ed25519"


def test_the_run_log_names_the_trusted_key_that_signed_the_file(
    source: str, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.pgtools import signing_key

    sql(source, SOURCE)
    sql(target, "CREATE TABLE items (id integer PRIMARY KEY, name text)")
    set_connections(monkeypatch, migration_target=target)
    path = tmp_path / "signed.zip"
    make_file(source, path, rules={"user": {"default": "overwrite"}})
    dag_run = run_dag("migration_execute", {"migration_file": str(path)})
    assert str(dag_run.state) == "success", task_states(dag_run)
    folder = log_folder(dag_run)
    signature = run_record(folder)["migration_file"]["signature"]
    key_id = signing_key().key_id
    assert (signature["status"], signature["signer"], signature["key_id"]) == (
        "verified",
        "test-suite",
        key_id,
    )
    assert signature["allow_unsigned"] is False and signature["accepted"] is True
    assert (
        f"Signature   signed by test-suite (trusted key {key_id})"
        in (folder / "migration.log").read_text()
    )


def _pipeline_run(
    path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, object]
) -> object:
    """Run the pipeline DAG ``sync_nightly`` of a one-pipeline file (``dag.test()``)."""
    import yaml
    from airflow.dag_processing.dagbag import DagBag

    from tests.airflowtools import metadata_db

    pipeline = {
        "name": "nightly",
        "source_conn_id": "migration_source",
        "target_conn_id": "migration_target",
        "profile": "generic",
        "schedule": "@daily",
        "rules": {"user": {"default": "overwrite"}},
        "options": {"backup": False, "rollback": False, **options},
    }
    path.write_text(yaml.safe_dump({"pipelines": [pipeline]}))
    monkeypatch.setenv("MIGRATION_PIPELINES", str(path))
    metadata_db()
    bag = DagBag(dag_folder=str(REPO / "dags" / "migration_pipelines.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["sync_nightly"].test()


def test_a_pipeline_with_allow_unsigned_runs_unsigned_files_and_one_without_refuses_them(
    source: str, target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No signing connection: the pipeline's create writes unsigned files. The pipelines file's
    allow_unsigned reaches the run (its params): false (the default) refuses the file at env_check,
    true runs it and the run log says it was accepted unsigned."""
    sql(source, SOURCE)
    sql(target, "CREATE TABLE items (id integer PRIMARY KEY, name text)")
    set_connections(monkeypatch, migration_source=source, migration_target=target)
    monkeypatch.delenv("AIRFLOW_CONN_MIGRATION_SIGNING")

    refused = _pipeline_run(tmp_path / "default.yaml", monkeypatch, {})
    assert str(refused.state) == "failed"
    states = task_states(refused)
    assert states["create_migration_file"] == ["success"] and states["env_check"] == ["failed"]
    refused_record = run_record(log_folder(refused))
    assert any("is not signed; refusing it" in e for e in refused_record["errors"]), refused_record
    assert refused_record["params"]["allow_unsigned"] is False
    assert rows(target, "SELECT count(*) FROM items") == [(0,)]

    allowed = _pipeline_run(tmp_path / "allow.yaml", monkeypatch, {"allow_unsigned": True})
    assert str(allowed.state) == "success", task_states(allowed)
    assert table_text(target, "items") == table_text(source, "items")
    signature = run_record(log_folder(allowed))["migration_file"]["signature"]
    assert (signature["status"], signature["allow_unsigned"]) == ("unsigned", True)
