"""Fixtures of the e2e tests: Airflow on a NocoBase staging/prod pair.

The browser tests of the restore and the Rules page share it. Modules that boot Airflow
differently (Celery and S3, the fault tests, the local executor) define their own ``airflow``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.airflowapi import Airflow, running_airflow
from tests.factories import connection_document
from tests.pgtools import FIXTURES, nocobase_databases


@pytest.fixture(scope="module")
def nocobase() -> Iterator[dict[str, str]]:
    """The NocoBase staging and prod databases (DSNs by name)."""
    with nocobase_databases() as dbs:
        yield dbs


@pytest.fixture(scope="module")
def airflow(
    nocobase: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Airflow]:
    """Airflow with nocobase_staging (an env connection) and nocobase_prod (through the API,
    with the app's AES key), migration_sync and migration_rollback parsed."""
    staging = connection_document(nocobase["staging"], description="NocoBase staging")
    env = {
        "AIRFLOW_CONN_NOCOBASE_STAGING": json.dumps(staging),
        "MM_POOL_SLOTS": "4",  # table units applied at once (the pool), as many as task slots
    }
    with running_airflow(tmp_path_factory.mktemp("airflow-on-nocobase"), env=env) as af:
        key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
        af.set_connection(
            "nocobase_prod", nocobase["prod"], {"app_env": {"APP_AES_SECRET_KEY": key}}
        )
        for dag_id in ("migration_sync", "migration_rollback"):
            af.wait_for_dag(dag_id)
        yield af
