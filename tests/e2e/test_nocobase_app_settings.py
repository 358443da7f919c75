"""The real app is the judge, installed with non-default identifier settings (issue 19).

Staging and prod are two separate NocoBase 2.2.15 installs (``yarn nocobase install``, ~40 s each)
with ``DB_SCHEMA=app``, ``DB_TABLE_PREFIX=nb_``, ``DB_UNDERSCORED=true``: each draws its own
snowflake id for the ``local`` storage. Staging gets a collection whose name has consecutive
capitals (``customerVIPs``, table ``nb_customer_v_i_ps``); prod gets a file uploaded BEFORE the
migration. A ``migration_sync`` whose connections lack the settings is refused with prod untouched;
with the settings it succeeds, and prod's app, booted on the migrated database, still serves its
file and its system logo, and works with ``customerVIPs``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import connection_uri, run_dag, task_states
from tests.e2e.airflowapi import free_port
from tests.nocobasetools import Api, install, install_database, running_app
from tests.pgtools import FIXTURES, create_database, drop_database, dsn_for, rows, scalar

STAGING_KEY = (FIXTURES / "dev_staging_aes_key.dat").read_bytes()
PROD_KEY = (FIXTURES / "dev_prod_aes_key.dat").read_bytes()
SETTINGS = {"DB_SCHEMA": "app", "DB_TABLE_PREFIX": "nb_", "DB_UNDERSCORED": "true"}
UPLOADED = b"prod's own report, uploaded before the migration\n"


def _download(api: Api, url: str) -> bytes:
    r = api.http.get(url, follow_redirects=True)  # /files/... redirects to the storage
    assert r.status_code == 200, f"GET {url} answered {r.status_code}: {r.text[:300]}"
    return r.content


def _files(api: Api, attachment_id: int) -> dict[str, bytes]:
    """The uploaded file and the system logo, downloaded through the app's own file URLs."""
    settings = api.get("systemSettings:get/1", **{"appends[]": "logo"})
    logo = settings["logo"]
    assert logo and logo.get("url"), settings
    file = api.get("attachments:get", filterByTk=attachment_id)
    return {"file": _download(api, file["url"]), "logo": _download(api, logo["url"])}


def _prod_state(prod: str) -> list[tuple[Any, ...]]:
    """Every table of prod's app schema with its row count and a digest of its rows."""
    tables = [r[0] for r in rows(prod, "SELECT tablename FROM pg_tables WHERE schemaname = 'app'")]
    return [
        (
            t,
            scalar(
                prod,
                f"SELECT count(*) || md5(string_agg(x::text, '|' ORDER BY x::text)) FROM app.\"{t}\" x",
            ),
        )
        for t in sorted(tables)
    ]


def test_prefixed_snake_case_app_keeps_prods_files_and_names_like_nocobase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir, _ = install()
    report: dict[str, Any] = {}
    names = {"staging": create_database(), "prod": create_database()}
    try:
        for side, key in (("staging", STAGING_KEY), ("prod", PROD_KEY)):
            report[f"{side} install s"] = install_database(
                app_dir, names[side], key, tmp_path, SETTINGS
            )
        staging, prod = dsn_for(names["staging"]), dsn_for(names["prod"])
        storage = "SELECT id FROM app.nb_storages WHERE name = 'local'"
        assert scalar(staging, storage) != scalar(prod, storage)  # two installs, two ids

        # staging: a collection whose name has consecutive capitals, with a record
        with running_app(
            app_dir, names["staging"], STAGING_KEY, free_port(), tmp_path, settings=SETTINGS
        ) as app:
            api = app.client()
            api.post(
                "collections:create",
                {
                    "name": "customerVIPs",
                    "title": "Customer VIPs",
                    "fields": [{"name": "fullName", "type": "string", "interface": "input"}],
                },
            )
            api.post("customerVIPs:create", {"fullName": "Ada"})
        assert scalar(staging, "SELECT full_name FROM app.nb_customer_v_i_ps") == "Ada"

        # prod: a file uploaded before the migration; it and the logo download
        with running_app(
            app_dir, names["prod"], PROD_KEY, free_port(), tmp_path, settings=SETTINGS
        ) as app:
            api = app.client()
            r = api.http.post(
                "/api/attachments:create", files={"file": ("report.txt", UPLOADED, "text/plain")}
            )
            assert r.status_code == 200, r.text[:500]
            attachment = r.json()["data"]["id"]
            before = _files(api, attachment)
        assert before["file"] == UPLOADED and before["logo"][:4] == b"\x89PNG"

        # 1. connections without the settings: refused, prod untouched
        untouched = _prod_state(prod)
        monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging))
        monkeypatch.setenv(
            "AIRFLOW_CONN_MIGRATION_TARGET",
            connection_uri(prod, {"APP_AES_SECRET_KEY": PROD_KEY.hex()}),
        )
        refused = run_dag("migration_sync", {"on_missing_plugins": "continue"})
        assert str(refused.state) == "failed"
        states = task_states(refused)
        assert states["create_migration_file"] == ["failed"], states
        assert states["apply_table"] != ["success"]
        assert _prod_state(prod) == untouched

        # 2. with the settings on both connections
        monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(staging, dict(SETTINGS)))
        monkeypatch.setenv(
            "AIRFLOW_CONN_MIGRATION_TARGET",
            connection_uri(prod, {**SETTINGS, "APP_AES_SECRET_KEY": PROD_KEY.hex()}),
        )
        started = time.monotonic()
        synced = run_dag("migration_sync", {"on_missing_plugins": "continue"})
        report["migration_sync s"] = round(time.monotonic() - started, 1)
        assert str(synced.state) == "success", task_states(synced)
        assert scalar(prod, "SELECT count(*) FROM app.nb_customer_v_i_ps") == 0  # schema-only

        # 3. the app on the migrated prod: prod's file and logo, and customerVIPs
        with running_app(
            app_dir, names["prod"], PROD_KEY, free_port(), tmp_path, settings=SETTINGS
        ) as app:
            api = app.client()
            report["prod boot s"] = app.boot_seconds
            assert _files(api, attachment) == before
            collections = {c["name"] for c in api.get("collections:list", paginate="false")}
            assert "customerVIPs" in collections
            made = api.post("customerVIPs:create", {"fullName": "Grace"})
            listed = api.get("customerVIPs:list", paginate="false")
            assert [v["fullName"] for v in listed] == ["Grace"], listed
            assert made["fullName"] == "Grace"
        assert scalar(prod, storage) != scalar(staging, storage)  # prod's storage kept its id
    finally:
        for name in names.values():
            drop_database(name)
    print("\n" + json.dumps(report, indent=1))
