"""The migration store fails while a run writes to it (issue 22).

A local store on a small tmpfs (full: ENOSPC; remounted read-only: EROFS), and an S3 store
(moto's server behind a middleware that answers chosen PUTs with 500s or too late). Whatever
is written — the migration file (``create``), a backup and its record, the run's log — the
error names the store and what to do, nothing half-written is left where a listing or
``migration_execute`` would take it, and the target is untouched.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from migration_manager.errors import StoreError
from tests.pgtools import signing_key, sql, table_text

pytestmark = pytest.mark.postgres

BUCKET = "mm-store-faults"
OVERWRITE = {"user": {"default": "overwrite"}}


def _source(dsn: str, rows: int = 30_000) -> None:
    # md5 text barely compresses: the file is about 1 MB
    sql(
        dsn,
        "CREATE TABLE items (id int PRIMARY KEY, payload text);"
        f"INSERT INTO items SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {rows}) g",
    )


def _create(source: str) -> Any:
    """What ``CreateMigrationOperator`` does with the store: write the file, then move it in."""
    from migration_manager.airflow.store import new_migration_file
    from migration_manager.create import create_migration, new_migration_id

    with new_migration_file(new_migration_id()) as (fh, dest):
        create_migration(source, fh, profile="generic", rules=OVERWRITE, signing_key=signing_key())
    return dest


def _backup(target: str, key: str = "prod") -> Any:
    from migration_manager.airflow.store import save_backup

    return save_backup(target, key, keep=3, target_conn_id=key)


def _run_log(run_id: str = "manual__faults") -> Any:
    from migration_manager.airflow.store import save_run_log, store_root
    from migration_manager.run_record import RunRecord
    from migration_manager.store_layout import run_log_dir, run_log_names

    record = RunRecord(migration_id="m1", dag_id="migration_sync", run_id=run_id, status="success")
    folder = run_log_dir(store_root(), *run_log_names("m1", run_id))
    save_run_log(folder, record, final_status="success")
    return folder


# --- a local store on a small filesystem ----------------------------------------------------


@pytest.fixture
def small_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 512 KiB tmpfs as MIGRATION_STORE (unmounted afterwards)."""
    mount = Path(tempfile.mkdtemp(prefix="mm-small-store-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=True)
    monkeypatch.setenv("MIGRATION_STORE", mount.as_uri())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def _read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


def _everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_create_into_a_full_store(small_store: Path, source: str) -> None:
    from migration_manager.ui.catalog import list_files

    _source(source)
    with pytest.raises(StoreError) as caught:
        _create(source)
    message = str(caught.value)
    assert str(small_store) in message and "the store is full" in message, message
    assert "MIGRATION_STORE" in message and "run again" in message, message
    assert caught.value.terminal  # a retry cannot free space: a person must
    assert _everything(small_store) == []  # no part file, no half-written zip
    assert list_files(small_store) == []


def test_create_into_a_read_only_store(small_store: Path, source: str) -> None:
    _source(source, rows=100)
    _read_only(small_store)
    with pytest.raises(StoreError) as caught:
        _create(source)
    assert "the store is read-only" in str(caught.value) and caught.value.terminal, caught.value
    assert _everything(small_store) == []


def test_backup_into_a_full_store(small_store: Path, target: str) -> None:
    from migration_manager.airflow.store import backup_records

    _source(target, rows=60_000)  # a dump of about 2 MB
    before = table_text(target, "items")
    with pytest.raises(StoreError) as caught:
        _backup(target)
    message = str(caught.value)
    assert "backup" in message and "the store is full" in message, message
    assert "nothing was written to the target" in message, message
    assert backup_records("prod") == []
    assert _everything(small_store) == []
    assert table_text(target, "items") == before


def test_run_log_into_a_read_only_store(small_store: Path) -> None:
    _read_only(small_store)
    with pytest.raises(StoreError) as caught:
        _run_log()
    message = str(caught.value)
    assert "the log of run migration_sync/manual__faults" in message, message
    assert "the store is read-only" in message and "ended success" in message, message
    assert _everything(small_store) == []


# --- an S3 store that fails ------------------------------------------------------------------


class FaultyS3:
    """moto's S3 server (the app ``ThreadedMotoServer`` of test_celery_s3 runs) behind a WSGI
    middleware failing PUTs and POSTs whose path matches a rule."""

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        from tests.e2e.airflowapi import free_port

        self.rules: list[tuple[str, str]] = []  # (path part, "500" | "slow")
        self.failed: list[str] = []
        self.port = free_port()
        moto = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            path = environ.get("PATH_INFO", "")
            if environ["REQUEST_METHOD"] in ("PUT", "POST"):
                for part, kind in self.rules:
                    if part in path:
                        self.failed.append(f"{kind} {path}")
                        if kind == "slow":
                            time.sleep(3)  # longer than the connection's read_timeout
                        body = (
                            b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                        )
                        start_response("500 Internal Server Error", [("Content-Type", "text/xml")])
                        return [body]
            return moto(environ, start_response)

        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        self.client.create_bucket(Bucket=BUCKET)

    def objects(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def uploads(self) -> list[str]:
        return [
            u["Key"] for u in self.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def faulty_s3() -> Iterator[FaultyS3]:
    s3 = FaultyS3()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def s3_store(faulty_s3: FaultyS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyS3]:
    prefix = f"m{time.monotonic_ns()}"
    extra = {
        "endpoint_url": faulty_s3.endpoint,
        "region_name": "us-east-1",
        "config_kwargs": {
            "read_timeout": 1,
            "connect_timeout": 1,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
    )
    monkeypatch.setenv("MIGRATION_STORE", f"s3://aws_default@{BUCKET}/{prefix}")
    faulty_s3.rules.clear()
    faulty_s3.failed.clear()
    yield faulty_s3
    faulty_s3.rules.clear()


@pytest.mark.parametrize("kind", ["500", "slow"])
def test_create_into_a_failing_s3_store(s3_store: FaultyS3, source: str, kind: str) -> None:
    _source(source, rows=2_000)
    s3_store.rules.append(("/files/", kind))
    with pytest.raises(StoreError) as caught:
        _create(source)
    message = str(caught.value)
    assert f"s3://aws_default@{BUCKET}/" in message, message
    assert "check MIGRATION_STORE and its connection" in message, message
    assert not caught.value.terminal  # the task is retried: the store may answer next time
    assert s3_store.failed, "no write reached the injected fault"
    assert not [k for k in s3_store.objects() if "/files/" in k]
    assert s3_store.uploads() == []


def test_backup_record_into_a_failing_s3_store(s3_store: FaultyS3, target: str) -> None:
    from migration_manager.airflow.store import backup_records

    _source(target, rows=200)
    before = table_text(target, "items")
    s3_store.rules.append(("/backups/prod/", "500"))  # the dump and its record
    with pytest.raises(StoreError) as caught:
        _backup(target)
    assert "nothing was written to the target" in str(caught.value), caught.value
    s3_store.rules[:] = [(".json", "500")]  # the dump goes in, its record does not
    with pytest.raises(StoreError) as caught:
        _backup(target)
    assert "the record of backup" in str(caught.value), caught.value
    assert not [k for k in s3_store.objects() if "/backups/" in k]  # the recordless dump removed
    assert backup_records("prod") == []
    assert table_text(target, "items") == before


def test_run_log_into_a_failing_s3_store(s3_store: FaultyS3) -> None:
    s3_store.rules.append(("migration.json", "500"))
    with pytest.raises(StoreError) as caught:
        _run_log("manual__s3")
    assert "the log of run migration_sync/manual__s3" in str(caught.value), caught.value
    assert not [k for k in s3_store.objects() if k.endswith("migration.json")]
