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
from tests.pgtools import make_file, rows, sql, table_text

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

    allowed = run_dag(
        "migration_execute", {"migration_file": str(unsigned), "allow_unsigned": True}
    )
    assert str(allowed.state) == "success", task_states(allowed)
    assert table_text(target, "items") == table_text(source, "items")


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
