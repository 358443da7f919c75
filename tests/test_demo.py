"""``make demo`` end to end: the quick start's first command must finish on its own, twice.

It runs ``python -m migration_manager.demo`` (what ``make demo`` runs) on uniquely named demo
databases and its own ``AIRFLOW_HOME``: two real ``bin/airflow dags test migration_sync`` runs
whose checks meet a missing variable and a missing plugin without asking anyone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.pgtools import PG_URL, REPO, drop_database, dsn_for, rows

pytestmark = [pytest.mark.postgres, pytest.mark.airflow, pytest.mark.slow]


def test_demo_migrates_then_changes_nothing(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    staging, prod = f"mmtest_demo_staging_{tag}", f"mmtest_demo_prod_{tag}"
    env = {**os.environ, "MM_PG_URL": PG_URL}
    cmd = [sys.executable, "-m", "migration_manager.demo", "--home", str(tmp_path / "airflow"),
           "--staging-db", staging, "--prod-db", prod]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert "second run: success, 0 table(s) changed, +0 ~0 -0 rows, 0 DDL statements" in out
        assert "Next: try it in the Airflow UI." in out and "make airflow" in out
        # the first run's per-table summary: the upserted user table and a profile-rule table
        assert "orders" in out and "upsert" in out and "uiSchemas" in out
        # the checks' answers arrived: the variable in prod, as a plain value
        assert rows(
            dsn_for(prod), 'SELECT type, value FROM "environmentVariables" WHERE name = %s',
            ("ORDERS_API_URL",),
        ) == [("default", "https://orders.prod.example.invalid/api")]  # fmt: skip
    finally:
        drop_database(staging)
        drop_database(prod)
