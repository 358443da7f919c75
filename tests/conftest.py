"""Shared fixtures: real PostgreSQL databases (created per test, dropped after), Airflow env.

PostgreSQL comes from ``MM_PG_URL`` (``make test`` sets it from ``bin/pg-url``), default
``postgresql://postgres@127.0.0.1:5432/postgres``. Airflow's environment is set here, before
anything imports Airflow, so that DAG tests use a throwaway ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migration_manager.signing import private_pem
from tests.airflowtools import airflow_env
from tests.pgtools import (
    FIXTURES,
    REPO,
    create_database,
    drop_database,
    dsn_for,
    load_dump,
    signing_key,
)

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mm-airflow-test-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
# the project's Airflow settings, as bin/airflow, bin/airflow-local and docker-compose.yaml
for _key, _value in airflow_env().items():
    os.environ.setdefault(_key, _value)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ["MIGRATION_STORE"] = (_AIRFLOW_HOME / "migrations").as_uri()
os.environ["MM_PROGRESS_SECONDS"] = "1"
# Migration files are signed (connection migration_signing) and checked against the trusted
# keys (Variable migration_trusted_keys): one key pair for the session, like make demo does.
_KEY = signing_key()
os.environ["AIRFLOW_CONN_MIGRATION_SIGNING"] = json.dumps(
    {"conn_type": "generic", "login": _KEY.signer, "password": private_pem(_KEY.private_key)}
)
os.environ["AIRFLOW_VAR_MIGRATION_TRUSTED_KEYS"] = json.dumps({_KEY.signer: _KEY.public_pem()})


@pytest.fixture
def new_db() -> Iterator[Callable[[], str]]:
    """A factory of fresh databases; returns each one's DSN. All are dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = create_database()
        made.append(name)
        return dsn_for(name)

    yield make
    # Dropping a database waits for a checkpoint (~1-2 s); a background thread does it while
    # the next tests run, and the session waits for it at the end.
    for name in made:
        _DROPPER.submit(drop_database, name)


_DROPPER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dropdb")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _DROPPER.shutdown(wait=True)


# Each test folder is a marker (``pytest -m unit``, ``-m "not e2e"``); the e2e tests all boot
# Airflow against PostgreSQL and take seconds, so they carry those markers too.
_FOLDER_MARKERS: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),
    "integration": ("integration",),
    "dags": ("dags",),
    "e2e": ("e2e", "airflow", "postgres", "slow"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        try:
            folder = item.path.relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        for name in _FOLDER_MARKERS.get(folder, ()):
            item.add_marker(name)


@pytest.fixture
def source(new_db: Callable[[], str]) -> str:
    return new_db()


@pytest.fixture
def target(new_db: Callable[[], str]) -> str:
    return new_db()


@pytest.fixture
def nocobase_pair(new_db: Callable[[], str]) -> tuple[str, str]:
    """Fresh databases loaded from the real NocoBase fixture: (staging, prod)."""
    staging, prod = new_db(), new_db()
    load_dump(staging, FIXTURES / "dev_staging.sql")
    load_dump(prod, FIXTURES / "dev_prod.sql")
    return staging, prod
