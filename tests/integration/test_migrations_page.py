"""The Migrations page's routes, through Airflow's own app (the plugin mounted, real auth, real REST API)."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflowtools import metadata_db
from tests.uitools import (
    PROD_EDIT_PART,
    api_token,
    auth_env,
    migration_archive,
    seed_store,
    sync_dags,
)

pytestmark = [pytest.mark.airflow]

P = "/migrations"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh migration store seeded with runs, files and backups (MIGRATION_STORE points at it)."""
    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIGRATION_STORE", folder.as_uri())
        seeded = seed_store(folder)
        (folder.parent / "outside-secret.txt").write_text("TOP-SECRET-OUTSIDE-THE-STORE")
        yield {"root": folder, **seeded}


@pytest.fixture(scope="module")
def client(store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A test client of Airflow's API server app (``/api/v2``, ``/auth``, the plugin at ``/migrations``)."""
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as mp:
        for key, value in auth_env(tmp_path_factory.mktemp("auth")).items():
            mp.setenv(key, value)
        metadata_db()
        sync_dags()
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        app = create_app(apps="core")
        test_client = TestClient(app)
        # "run this file" calls Airflow's REST API: here, the same app in-process
        page_app = next(r.app for r in app.routes if getattr(r, "path", None) == P)
        page_app.state.api_client = lambda request: TestClient(app)
        yield test_client
        purge_cached_app()


def _routes(store: dict[str, Any]) -> list[tuple[str, str]]:
    m, r = store["success"]
    name = f"{m}.zip"
    return [
        ("GET", f"{P}/"),
        ("GET", f"{P}/?status=failed"),
        ("GET", f"{P}/runs/{m}/{r}"),
        *[
            ("GET", f"{P}/runs/{m}/{r}/download/{n}")
            for n in ("migration.log", "migration.json", "schema.sql", "data.sql", "summary.json")
        ],
        ("GET", f"{P}/files"),
        ("GET", f"{P}/files/{name}"),
        ("POST", f"{P}/files"),
        ("POST", f"{P}/files/{name}/run"),
        ("GET", f"{P}/backups"),
        ("GET", f"{P}/static/style.css"),
        ("GET", f"{P}/static/page.js"),
    ]


def test_every_route_refuses_anonymous_requests(client: Any, store: dict[str, Any]) -> None:
    for method, url in _routes(store):
        resp = client.request(method, url)
        assert resp.status_code == 401, (method, url, resp.status_code)
        assert "TOP-SECRET" not in resp.text
    # a forged token is refused too, and so is a cookie that is not a token
    resp = client.get(f"{P}/", headers={"Authorization": "Bearer not-a-token"})
    assert resp.status_code in (401, 403)
    resp = client.get(f"{P}/", cookies={"_token": "not-a-token"})
    assert resp.status_code in (401, 403)


def test_the_ui_cookie_is_accepted(client: Any, store: dict[str, Any]) -> None:
    token = api_token(client, "admin")
    from fastapi.testclient import TestClient

    with TestClient(client.app, cookies={"_token": token}) as browser_like:
        assert browser_like.get(f"{P}/").status_code == 200


def test_list_newest_first_with_filters(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    resp = client.get(f"{P}/", headers=admin)
    assert resp.status_code == 200
    html = resp.text
    positions = [
        html.index(mid)
        for mid in (
            "mig-20261126T100000Z-bbbbbb",
            "mig-20261126T090000Z-aaaaaa",
            "mig-20261126T080000Z-cccccc",
        )
    ]
    assert positions == sorted(positions), "newest first"
    for expected in (
        "staging",
        "prod",
        "failed",
        "success",
        "2026-11-26 10:01:00 UTC",
        "1 / 2",
        "16",
        "8.0 s",
    ):
        assert expected in html, expected
    failed = client.get(f"{P}/?status=failed", headers=admin).text
    assert "mig-20261126T090000Z-aaaaaa" in failed and "mig-20261126T100000Z-bbbbbb" not in failed
    assert "at apply_table (uiSchemas)" in failed  # where the failed run stopped
    qa = client.get(f"{P}/?target=qa", headers=admin).text
    assert "mig-20261126T080000Z-cccccc" in qa and "mig-20261126T100000Z-bbbbbb" not in qa
    assert (
        "No migration matches these filters"
        in client.get(f"{P}/?target=nowhere", headers=admin).text
    )


def test_run_page(client: Any, admin: dict[str, str], store: dict[str, Any]) -> None:
    m, r = store["failed"]
    resp = client.get(f"{P}/runs/{m}/{r}", headers=admin)
    assert resp.status_code == 200
    html = resp.text
    assert '<svg class="timeline"' in html and 'data-status="failed"' in html  # the process chart
    assert "apply_table[uiSchemas]" in html and "3.00 s · try 3" not in html  # 2 s, third try
    assert "2.00 s · try 3" in html
    assert "uiSchemas: invalid input syntax for type integer" in html  # the error
    # the destructive parts the run was approved with (a prod edit), shown up front
    assert '<section class="card destructive">' in html
    assert PROD_EDIT_PART in html and "approved by olga" in html
    assert store["failed_backup"] in html  # the backup id
    assert "DB_SCHEMA" in html  # the checks' outcome
    assert "Same application version and the same version of every plugin" in html
    assert "<strong>Restart the target app.</strong> Restart the target application now" in html
    assert "Migration mig-20261126T090000Z-aaaaaa: FAILED" in html  # the log text, online
    # who signed the file, or that it ran unsigned under allow_unsigned (page and migration.log)
    assert "unsigned; accepted because allow_unsigned is set" in html
    assert "Signature   unsigned; accepted because allow_unsigned is set" in html
    m2, r2 = store["success"]
    signed = client.get(f"{P}/runs/{m2}/{r2}", headers=admin).text
    assert "signed by release-team (trusted key 0123456789abcdef)" in signed
    for name in ("migration.log", "migration.json", "schema.sql", "data.sql"):
        assert f'href="{P}/runs/{m}/{r}/download/{name}"' in html
    assert f'href="{P}/files/{m}.zip"' in html  # the migration file
    assert 'href="/dags/migration_execute/runs/manual__2026-11-26T09%3A01%3A00%2B00%3A00"' in html


def test_run_page_shows_sample_keys(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    m, r = store["success"]
    html = client.get(f"{P}/runs/{m}/{r}", headers=admin).text
    assert "inserted (2 of 12): a1, &lt;b2&gt;" in html  # escaped
    assert "deleted (1 of 1): z9" in html
    assert 'data-kind="updated"' not in html  # no key, no line
    log = (store["root"] / "logs" / m / r / "migration.log").read_text()
    assert "uiSchemas inserted (2 of 12): a1, <b2>" in log


def test_downloads(client: Any, admin: dict[str, str], store: dict[str, Any]) -> None:
    m, r = store["success"]
    folder = store["root"] / "logs" / m / r
    for name, media in (
        ("migration.log", "text/plain"),
        ("migration.json", "application/json"),
        ("schema.sql", "application/sql"),
        ("data.sql", "application/sql"),
    ):
        resp = client.get(f"{P}/runs/{m}/{r}/download/{name}", headers=admin)
        assert resp.status_code == 200, name
        assert resp.headers["content-type"].startswith(media)
        assert resp.headers["content-disposition"].startswith("attachment;")
        assert resp.content == (folder / name).read_bytes()
    sql = client.get(f"{P}/runs/{m}/{r}/download/schema.sql", headers=admin).text
    assert 'ALTER TABLE public."uiSchemas" ADD COLUMN "x-async" BOOLEAN;' in sql
    inline = client.get(f"{P}/runs/{m}/{r}/download/migration.log?inline=true", headers=admin)
    assert inline.headers["content-disposition"].startswith("inline;")
    zipped = client.get(f"{P}/files/{m}.zip", headers=admin)
    assert (
        zipped.status_code == 200
        and zipped.content == (store["root"] / "files" / f"{m}.zip").read_bytes()
    )


def test_unknown_ids_are_404(client: Any, admin: dict[str, str], store: dict[str, Any]) -> None:
    m, r = store["success"]
    for url in (
        f"{P}/runs/mig-nope/run-nope",
        f"{P}/runs/{m}/run-nope",
        f"{P}/runs/mig-nope/{r}/download/migration.log",
        f"{P}/runs/{m}/{r}/download/airflow.cfg",
        f"{P}/runs/{m}/{r}/download/",
        f"{P}/files/mig-nope.zip",
        f"{P}/files/{m}.json",
        f"{P}/nothing-here",
    ):
        assert client.get(url, headers=admin).status_code == 404, url
    resp = client.post(
        f"{P}/files/mig-nope.zip/run", headers=admin, data={"target_conn_id": "prod"}
    )
    assert resp.status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/runs/..%2F..%2F/outside-secret.txt",
        "/runs/%2e%2e/%2e%2e/download/migration.log",
        "/runs/%2E%2E/%2E%2E/download/schema.sql",
        "/runs/{m}/..%2F..%2F..%2Foutside-secret.txt/download/migration.log",
        "/runs/{m}/{r}/download/..%2F..%2F..%2F..%2Foutside-secret.txt",
        "/runs/{m}/{r}/download/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2foutside-secret.txt",
        "/runs/{m}/{r}/download/....//....//outside-secret.txt",
        "/files/..%2Foutside-secret.txt",
        "/files/..%2F..%2Foutside-secret.txt",
        "/files/%2e%2e%2foutside-secret.zip",
        "/files/.hidden.zip",
        "/files/%2Fetc%2Fpasswd",
        "/files/%2E%2E",
        "/files/..%5C..%5Coutside-secret.txt",
    ],
)
def test_path_traversal_is_refused(
    client: Any, admin: dict[str, str], store: dict[str, Any], url: str
) -> None:
    m, r = store["success"]
    resp = client.get(P + url.format(m=m, r=r), headers=admin)
    assert resp.status_code == 404, (url, resp.status_code)
    assert b"TOP-SECRET" not in resp.content and b"root:" not in resp.content


def test_upload_verifies_and_stores(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    body = migration_archive("mig-20261126T120000Z-upload")
    resp = client.post(
        f"{P}/files",
        headers=admin,
        files={"file": ("staging's file (1).zip", body, "application/zip")},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == f"{P}/files?uploaded=mig-20261126T120000Z-upload.zip"
    stored = store["root"] / "files" / "mig-20261126T120000Z-upload.zip"
    assert stored.read_bytes() == body  # stored under its manifest's id, not the uploaded name
    page = client.get(resp.headers["location"], headers=admin).text
    assert "Stored <code>mig-20261126T120000Z-upload.zip</code>" in page
    assert client.get(f"{P}/files/{stored.name}", headers=admin).content == body
    # the same file again: accepted, nothing changes
    again = client.post(
        f"{P}/files", headers=admin, files={"file": ("x.zip", body)}, follow_redirects=False
    )
    assert again.status_code == 303
    # another file with the same id: refused, the stored one is kept
    other = migration_archive("mig-20261126T120000Z-upload", rows=99)
    clash = client.post(f"{P}/files", headers=admin, files={"file": ("x.zip", other)})
    assert clash.status_code == 409 and "different file" in clash.text
    assert stored.read_bytes() == body


def _flipped(body: bytes) -> bytes:
    """One bit flipped inside the data member (damaged in transit: the ZIP's CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        info = zf.getinfo("data/0001.copy.zst")
    head = info.header_offset
    name_len, extra_len = struct.unpack("<HH", body[head + 26 : head + 30])
    offset = head + 30 + name_len + extra_len + info.compress_size // 2
    data = bytearray(body)
    data[offset] ^= 0xFF
    return bytes(data)


def _rezipped(body: bytes, member: str, change: Any) -> bytes:
    """The file re-zipped with one member edited (a consistent ZIP: only our checksums can tell)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(body)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            dst.writestr(name, change(content) if name == member else content)
    return out.getvalue()


def _with_member(body: bytes, name: str) -> bytes:
    buf = io.BytesIO(body)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(name, b"x")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("what", "make", "message"),
    [
        (
            "tampered data",
            lambda: _rezipped(
                migration_archive("mig-tampered"), "data/0001.copy.zst", lambda b: b[:-1] + b"!"
            ),
            "fails its checksum",
        ),
        (
            "tampered manifest",
            lambda: _rezipped(
                migration_archive("mig-tampered2"),
                "manifest.json",
                lambda b: b.replace(b'"rows": 3', b'"rows": 4'),
            ),
            "manifest fails its checksum",
        ),
        ("damaged in transit", lambda: _flipped(migration_archive("mig-flipped")), "is damaged"),
        ("not a zip", lambda: b"hello, I am not a migration file", "not a migration file"),
        ("empty", lambda: b"", "is empty"),
        (
            "path escaping",
            lambda: _with_member(migration_archive("mig-escape"), "../../evil.sh"),
            "unexpected member",
        ),
    ],
)
def test_upload_refuses_invalid_files(
    client: Any, admin: dict[str, str], store: dict[str, Any], what: str, make: Any, message: str
) -> None:
    before = sorted(p.name for p in (store["root"] / "files").iterdir())
    resp = client.post(
        f"{P}/files",
        headers=admin,
        files={"file": ("../../evil name.zip", make(), "application/zip")},
    )
    assert resp.status_code == 400, (what, resp.status_code)
    assert message in resp.text, (what, resp.text[:2000])
    assert sorted(p.name for p in (store["root"] / "files").iterdir()) == before
    assert not (store["root"].parent / "evil name.zip").exists()


def test_viewer_may_read_but_not_upload_or_run(
    client: Any, viewer: dict[str, str], store: dict[str, Any]
) -> None:
    m, r = store["success"]
    assert client.get(f"{P}/runs/{m}/{r}", headers=viewer).status_code == 200
    body = migration_archive("mig-20261126T130000Z-viewer")
    assert (
        client.post(f"{P}/files", headers=viewer, files={"file": ("v.zip", body)}).status_code
        == 403
    )
    assert not (store["root"] / "files" / "mig-20261126T130000Z-viewer.zip").exists()
    resp = client.post(f"{P}/files/{m}.zip/run", headers=viewer, data={"target_conn_id": "prod"})
    assert resp.status_code == 403


def test_run_this_file_triggers_migration_execute(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    m, _ = store["other"]
    resp = client.post(
        f"{P}/files/{m}.zip/run",
        headers=admin,
        data={"target_conn_id": "qa", "allow_drop": "true"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    assert location.startswith(f"{P}/files?triggered=manual__")
    from urllib.parse import parse_qs, urlsplit

    run_id = parse_qs(urlsplit(location).query)["triggered"][0]
    runs = client.get("/api/v2/dags/migration_execute/dagRuns", headers=admin).json()["dag_runs"]
    run = next(x for x in runs if x["dag_run_id"] == run_id)
    assert run["conf"] == {"migration_file": f"{m}.zip", "target_conn_id": "qa", "allow_drop": True}
    assert run["triggering_user_name"] == "admin" and run["state"] == "queued"
    page = client.get(location, headers=admin).text
    assert f"migration_execute run {run_id}" in page
    assert "The DAG is paused" in page  # new DAGs start paused


def test_preview_on_target_starts_a_dry_run_and_shows_its_run_page(
    client: Any, admin: dict[str, str], viewer: dict[str, str], store: dict[str, Any]
) -> None:
    """Preview on target triggers migration_execute with dry_run (a DAG run, not work inside the
    API server); its page waits for the run and then shows the run page."""
    from urllib.parse import unquote

    from migration_manager import run_files, store_layout
    from migration_manager.run_record import read_record

    m, r = store["other"]
    assert f'action="{P}/files/{m}.zip/preview"' in client.get(f"{P}/files", headers=admin).text
    assert (
        client.post(
            f"{P}/files/{m}.zip/preview", headers=viewer, data={"target_conn_id": "qa"}
        ).status_code
        == 403
    )
    resp = client.post(
        f"{P}/files/{m}.zip/preview",
        headers=admin,
        data={"target_conn_id": "qa"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    assert location.startswith(f"{P}/previews/manual__")
    run_id = unquote(location.rsplit("/", 1)[1])
    run = client.get(f"/api/v2/dags/migration_execute/dagRuns/{run_id}", headers=admin).json()
    assert run["conf"] == {
        "migration_file": f"{m}.zip",
        "target_conn_id": "qa",
        "allow_drop": False,
        "dry_run": True,
    }
    assert run["state"] == "queued" and run["triggering_user_name"] == "admin"
    waiting = client.get(location, headers=admin)
    assert waiting.status_code == 200
    assert '<meta http-equiv="refresh" content="5">' in waiting.text
    assert 'data-state="queued"' in waiting.text and "The DAG is paused" in waiting.text
    # collect_logs writes the run's log (here: the seeded record under this run's id): the
    # preview page is now the run page
    seeded = read_record((store["root"] / "logs" / m / r / "migration.json").read_text())
    record = seeded.model_copy(update={"run_id": run_id, "dry_run": True})
    folder = store["root"] / "logs" / m / store_layout.safe_component(run_id)
    run_files.write_files(folder, record)
    done = client.get(location, headers=admin, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"{P}/runs/{m}/{store_layout.safe_component(run_id)}"
    page = client.get(done.headers["location"], headers=admin).text
    assert '<span class="badge dry">dry run</span>' in page
    assert client.get(f"{P}/previews/manual__nope", headers=admin).status_code == 404


def test_backups_page(client: Any, admin: dict[str, str], store: dict[str, Any]) -> None:
    html = client.get(f"{P}/backups", headers=admin).text
    m, r = store["success"]
    for expected in (
        store["success_backup"],
        store["other_backup"],
        "prod",
        "qa",
        "15.10",
        "4.0 KB",
        "56",
    ):
        assert expected in html, expected
    assert f'href="{P}/runs/{m}/{r}"' in html


def test_static_files(client: Any, admin: dict[str, str]) -> None:
    resp = client.get(f"{P}/static/style.css", headers=admin)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/css")
    resp = client.get(f"{P}/static/page.js", headers=admin)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    for name in ("app.py", "..%2Fapp.py", "%2E%2E%2Fcatalog.py", "style.css.map"):
        assert client.get(f"{P}/static/{name}", headers=admin).status_code == 404, name


def test_plugin_shows_in_the_ui_menu(client: Any, admin: dict[str, str]) -> None:
    plugins = client.get("/api/v2/plugins", headers=admin).json()["plugins"]
    plugin = next(p for p in plugins if p["name"] == "migration_manager")
    view = plugin["external_views"][0]
    assert (
        view["url_route"] == "migrations"
        and view["href"] == f"{P}/"
        and view["destination"] == "nav"
    )
    assert plugin["fastapi_apps"][0]["url_prefix"] == P


def test_empty_store(
    client: Any, admin: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATION_STORE", (tmp_path / "empty").as_uri())
    assert "No migration has run yet" in client.get(f"{P}/", headers=admin).text
    assert "no migration file yet" in client.get(f"{P}/files", headers=admin).text
    assert "No backup yet" in client.get(f"{P}/backups", headers=admin).text


def test_downloads_from_a_remote_store_are_streamed(
    client: Any, admin: dict[str, str], store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a local file (S3, ...), files are streamed in chunks, not read whole."""
    from migration_manager.ui import catalog

    monkeypatch.setattr(catalog, "local_path", lambda path: None)
    m, r = store["success"]
    resp = client.get(f"{P}/files/{m}.zip", headers=admin)
    assert resp.status_code == 200
    assert resp.content == (store["root"] / "files" / f"{m}.zip").read_bytes()
    assert resp.headers["content-disposition"] == f'attachment; filename="{m}.zip"'
    sql = client.get(f"{P}/runs/{m}/{r}/download/schema.sql", headers=admin)
    assert sql.content == (store["root"] / "logs" / m / r / "schema.sql").read_bytes()


# --- hardening: cross-site requests, upload limits, signatures, paths outside the store ----------


def _runs_of_execute(client: Any, admin: dict[str, str]) -> int:
    resp = client.get("/api/v2/dags/migration_execute/dagRuns", headers=admin)
    return int(resp.json()["total_entries"])


def test_a_cross_site_form_post_with_the_ui_cookie_changes_nothing(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    """A form on another site, posted by a logged-in user's browser (cookie only): refused."""
    from fastapi.testclient import TestClient

    m, _r = store["success"]
    token = api_token(client, "admin")
    runs_before = _runs_of_execute(client, admin)
    body = migration_archive("mig-20261126T150000Z-csrf")
    stored = store["root"] / "files" / "mig-20261126T150000Z-csrf.zip"
    with TestClient(client.app, cookies={"_token": token}) as browser:
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},  # a sandboxed iframe or data: URL
            {"Referer": "https://evil.example/page.html"},
            {},  # neither header
        ):
            run = browser.post(
                f"{P}/files/{m}.zip/run",
                data={"target_conn_id": "migration_target"},
                headers=headers,
                follow_redirects=False,
            )
            assert run.status_code == 403, (headers, run.status_code)
            preview = browser.post(
                f"{P}/files/{m}.zip/preview",
                data={"target_conn_id": "migration_target"},
                headers=headers,
                follow_redirects=False,
            )
            assert preview.status_code == 403, (headers, preview.status_code)
            upload = browser.post(
                f"{P}/files",
                files={"file": ("x.zip", body)},
                headers=headers,
                follow_redirects=False,
            )
            assert upload.status_code == 403, (headers, upload.status_code)
            assert "Refused" in upload.text
            save = browser.put(
                f"{P}/rules/api/rule-sets/csrf-set",
                json={"profile": "generic", "rules": {}},
                headers=headers,
            )
            assert save.status_code == 403, (headers, save.status_code)
        assert _runs_of_execute(client, admin) == runs_before
        assert not stored.exists()
        assert browser.get(f"{P}/rules/api/rule-sets/csrf-set").status_code == 404
        # the page itself (same origin) may post with the cookie
        same = browser.post(
            f"{P}/files",
            files={"file": ("x.zip", body)},
            headers={"Origin": "http://testserver"},
            follow_redirects=False,
        )
        assert same.status_code == 303, same.text
        assert stored.read_bytes() == body


def _bomb(manifest_id: str) -> bytes:
    """A signed, valid file plus a checksum member that inflates to 1 GiB (about 1 MiB on disk)."""
    body = migration_archive(manifest_id)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(body)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != "manifest.json.sha256":
                dst.writestr(info.filename, src.read(info.filename))
                continue
            bomb = zipfile.ZipInfo(info.filename)
            bomb.compress_type = zipfile.ZIP_DEFLATED
            with dst.open(bomb, "w", force_zip64=True) as fh:
                fh.write(src.read(info.filename))
                block = b" " * (1 << 20)
                for _ in range(1024):
                    fh.write(block)
    return out.getvalue()


def test_an_upload_that_inflates_to_1_gib_is_refused_with_413_naming_the_limit(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    body = _bomb("mig-20261126T160000Z-bomb")
    assert len(body) < 2 << 20
    resp = client.post(f"{P}/files", headers=admin, files={"file": ("bomb.zip", body)})
    assert resp.status_code == 413, resp.status_code
    assert "member manifest.json.sha256 is larger than its limit of 128 bytes" in resp.text
    assert not (store["root"] / "files" / "mig-20261126T160000Z-bomb.zip").exists()


def test_unsigned_and_wrongly_signed_uploads_are_refused_unless_allowed(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    from migration_manager.archive import MANIFEST

    unsigned = migration_archive("mig-20261126T170000Z-unsigned", signed=False)
    resp = client.post(f"{P}/files", headers=admin, files={"file": ("u.zip", unsigned)})
    assert resp.status_code == 400 and "is not signed" in resp.text
    assert not (store["root"] / "files" / "mig-20261126T170000Z-unsigned.zip").exists()
    # signed, then the manifest edited and its checksum recomputed: only the signature can tell
    signed = migration_archive("mig-20261126T170000Z-forged")

    def forge(manifest: bytes) -> bytes:
        return manifest.replace(b'"staging"', b'"staging2"')

    forged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(signed)) as src, zipfile.ZipFile(forged, "w") as dst:
        new = forge(src.read(MANIFEST))
        for name in src.namelist():
            content = src.read(name)
            if name == MANIFEST:
                content = new
            elif name == "manifest.json.sha256":
                import hashlib

                content = hashlib.sha256(new).hexdigest().encode() + b"\n"
            dst.writestr(name, content)
    resp = client.post(f"{P}/files", headers=admin, files={"file": ("f.zip", forged.getvalue())})
    assert resp.status_code == 400 and "does not match its manifest" in resp.text
    # allowed explicitly: stored, and the listing says it is unsigned
    resp = client.post(
        f"{P}/files",
        headers=admin,
        files={"file": ("u.zip", unsigned)},
        data={"allow_unsigned": "true"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    listing = client.get(f"{P}/files", headers=admin).text
    row = listing[listing.index("mig-20261126T170000Z-unsigned.zip") :].split("</tr>")[0]
    assert ">unsigned<" in row
    signed_row = listing[listing.index(f"{store['success'][0]}.zip") :].split("</tr>")[0]
    assert ">test-suite<" in signed_row  # who signed it, by the trusted key's name


def test_a_listing_does_not_read_stored_files_again(
    client: Any, admin: dict[str, str], store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from migration_manager.ui import catalog

    assert client.get(f"{P}/files", headers=admin).status_code == 200
    opened: list[str] = []
    real = catalog.ArchiveReader

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(kwargs.get("name")))
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "ArchiveReader", counting)
    for _ in range(3):
        assert client.get(f"{P}/files", headers=admin).status_code == 200
    assert opened == []
    # a changed file (new size/mtime) is read once more
    path = store["root"] / "files" / f"{store['other'][0]}.zip"
    path.write_bytes(migration_archive(store["other"][0], rows=7))
    assert client.get(f"{P}/files", headers=admin).status_code == 200
    assert opened == [path.name]


def _raw_get(app: Any, raw_path: bytes, token: str) -> tuple[int, bytes]:
    """One GET with the path exactly as given (HTTP clients remove ``..`` segments; servers do not)."""
    from urllib.parse import unquote_to_bytes

    import anyio

    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote_to_bytes(raw_path.decode()).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


@pytest.mark.parametrize(
    "raw",
    [
        b"/migrations/files/../../../../etc/passwd",
        b"/migrations/files/../../../outside-secret.txt",
        b"/migrations/files/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        b"/migrations/files/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        b"/migrations/files/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        b"/migrations/files/..%5c..%5c..%5cetc%5cpasswd",
        b"/migrations/files/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        b"/migrations/runs/../../../../etc/passwd/download/migration.log",
        b"/migrations/static/../../../../etc/passwd",
    ],
)
def test_paths_outside_the_store_get_only_the_page_s_own_404(
    client: Any, store: dict[str, Any], raw: bytes
) -> None:
    status, body = _raw_get(client.app, raw, api_token(client, "admin"))
    assert status == 404, (raw, status)
    assert b"root:" not in body and b"TOP-SECRET" not in body
    assert b"<h1>Not found</h1>" in body  # the Migrations page's error page, not another app's


def test_the_upload_limit_answers_413_before_reading_the_body() -> None:
    from fastapi.testclient import TestClient
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from migration_manager.ui.app import UploadLimit

    seen: list[int] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(len(await Request(scope, receive).body()))
        await JSONResponse({"bytes": seen[-1]})(scope, receive, send)

    limited = TestClient(UploadLimit(inner, limit=1000))  # no lifespan: a bare ASGI app
    assert limited.post("/files", content=b"x" * 1000).status_code == 200
    big = limited.post("/files", content=b"x" * 1001)
    assert big.status_code == 413
    assert "larger than the limit of 1000 bytes (MM_MAX_UPLOAD_BYTES)" in big.text

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"y" * 400

    streamed = limited.post("/files", content=chunks())
    assert streamed.status_code == 413
    assert seen == [1000]


def test_delete_a_migration_file(
    client: Any, admin: dict[str, str], viewer: dict[str, str], store: dict[str, Any]
) -> None:
    from migration_manager import retention

    root = store["root"]
    spare = "mig-20261126T140000Z-spare1"
    (root / "files" / f"{spare}.zip").write_bytes(migration_archive(spare))
    page = client.get(f"{P}/files", headers=admin).text
    assert f"/files/{spare}.zip/delete" in page
    # a viewer may not; the state-changing route needs the right to trigger, like upload and run
    assert client.post(f"{P}/files/{spare}.zip/delete", headers=viewer).status_code == 403
    assert client.post(f"{P}/files/{spare}.zip/delete").status_code == 401
    # in use by a running run: refused, kept
    retention.take_lease(root, f"{spare}.zip", dag_id="migration_execute", run_id="manual__now")
    resp = client.post(f"{P}/files/{spare}.zip/delete", headers=admin)
    assert resp.status_code == 409
    assert "used by the running run migration_execute/manual__now" in resp.text
    assert (root / "files" / f"{spare}.zip").exists()
    retention.release_lease(root, dag_id="migration_execute", run_id="manual__now")
    resp = client.post(f"{P}/files/{spare}.zip/delete", headers=admin, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].endswith(f"deleted={spare}.zip")
    assert not (root / "files" / f"{spare}.zip").exists()
    # a file a kept backup was taken for: refused, and shown as in use
    m, _ = store["success"]
    resp = client.post(f"{P}/files/{m}.zip/delete", headers=admin)
    assert resp.status_code == 409 and "a kept backup of target prod" in resp.text
    assert (root / "files" / f"{m}.zip").exists()
    assert f"/files/{m}.zip/delete" not in client.get(f"{P}/files", headers=admin).text
    assert client.post(f"{P}/files/nope.zip/delete", headers=admin).status_code == 404


def test_restore_from_the_backups_and_run_pages_then_the_history_shows_it(
    client: Any, admin: dict[str, str], viewer: dict[str, str], store: dict[str, Any]
) -> None:
    """Restore… (Backups page, run page) triggers migration_rollback as the user; once the
    restore is recorded, the run it undid is marked "rolled back" with a link to the restore
    run, the history lists the restore, the Backups page says when and by which run."""
    from urllib.parse import quote, unquote

    from migration_manager.airflow.store import save_restore_record
    from migration_manager.backup.record import RestoreRecord

    m, r = store["success"]
    backup_id = store["success_backup"]
    form = f'action="{P}/backups/restore"'
    assert form in client.get(f"{P}/backups", headers=admin).text
    run_page = client.get(f"{P}/runs/{m}/{r}", headers=admin).text
    assert form in run_page and f'name="backup_id" value="{backup_id}"' in run_page
    data = {"target_conn_id": "prod", "backup_id": backup_id}
    assert client.post(f"{P}/backups/restore", headers=viewer, data=data).status_code == 403
    unknown = client.post(
        f"{P}/backups/restore", headers=admin, data={**data, "target_conn_id": "qa"}
    )
    assert unknown.status_code == 404 and f"No backup {backup_id} of qa" in unknown.text
    resp = client.post(f"{P}/backups/restore", headers=admin, data=data, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    assert location.startswith(f"{P}/rules/runs/migration_rollback/manual__")
    run_id = unquote(location.rsplit("/", 1)[1])
    run = client.get(f"/api/v2/dags/migration_rollback/dagRuns/{run_id}", headers=admin).json()
    assert run["conf"] == {**data, "mode": "in_place"}
    assert run["triggering_user_name"] == "admin"
    follow = client.get(location, headers=admin).text
    assert "Restoring a backup" in follow and "the Migrations page" in follow
    # the follow view lists the tasks in run order (not by name: app_restart runs last)
    state = client.get(
        f"{P}/rules/api/runs/migration_rollback/{quote(run_id, safe='')}", headers=admin
    ).json()
    assert [t["task_id"] for t in state["tasks"]] == ["restore", "app_restart"]

    # the restore task records the restore once it is verified
    undone_run = client.get(f"{P}/runs/{m}/{r}", headers=admin)
    seeded_run_id = undone_run.text.split('<dd class="mono small">', 1)[1].split("<", 1)[0]
    save_restore_record(
        "prod",
        RestoreRecord(
            backup_id=backup_id,
            target_conn_id="prod",
            mode="in_place",
            database="prod",
            dag_id="migration_rollback",
            run_id=run_id,
            restored_at="2026-11-26T11:00:00+00:00",
            triggered_by="admin",
            tables=2,
            rows=56,
            undid_migration_id=m,
            undid_run_id=seeded_run_id,
        ),
    )
    link = f'href="{P}/rules/runs/migration_rollback/{quote(run_id, safe="")}"'
    history = client.get(f"{P}/", headers=admin).text
    marked = history.split(f'data-run-id="{seeded_run_id}"', 1)[1].split("</tr>", 1)[0]
    assert "rolled back" in marked and link in marked
    restore_row = history.split(f'data-run-id="{run_id}"', 1)[1].split("</tr>", 1)[0]
    assert "Restore of a backup" in restore_row
    assert f"{backup_id}, taken before {m}" in restore_row
    page = client.get(f"{P}/runs/{m}/{r}", headers=admin).text
    assert 'id="rolled-back"' in page and link in page
    assert form not in page  # restored already: no second Restore on the run page
    backups = client.get(f"{P}/backups", headers=admin).text
    row = backups.split(f'<tr id="{backup_id}">', 1)[1].split("</tr>", 1)[0]
    assert link in row and "by <a" in row and "· admin" in row


def test_the_follow_view_lists_tasks_in_run_order(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    from urllib.parse import quote

    m, _ = store["other"]
    resp = client.post(
        f"{P}/files/{m}.zip/run",
        headers=admin,
        data={"target_conn_id": "qa"},
        follow_redirects=False,
    )
    from urllib.parse import parse_qs, urlsplit

    run_id = parse_qs(urlsplit(resp.headers["location"]).query)["triggered"][0]
    state = client.get(
        f"{P}/rules/api/runs/migration_execute/{quote(run_id, safe='')}", headers=admin
    ).json()
    order = [t["task_id"] for t in state["tasks"]]
    assert order != sorted(order)
    assert order[0] == "env_check" and order[-1] == "collect_logs"
    for before, after in (
        ("plan", "backup"),
        ("backup", "apply_table"),
        ("apply_table", "collect_logs"),
    ):
        assert order.index(before) < order.index(after), order


def test_a_run_whose_file_does_not_exist_says_so(
    client: Any, admin: dict[str, str], store: dict[str, Any]
) -> None:
    """Titled by the file it was given (not "Run without a migration file"), with why it could
    not be read; the Checks card says the checks did not run, and where the run stopped."""
    from migration_manager import run_files, store_layout
    from migration_manager.run_record_build import RunInfo, Step, build_record, unreadable_file
    from migration_manager.step_kinds import StepKind

    run_id = "manual__2026-11-27T09:00:00+00:00"
    t0 = "2026-11-27T09:00"
    record = build_record(
        run=RunInfo(
            dag_id="migration_execute",
            run_id=run_id,
            run_type="manual",
            triggered_by="admin",
            start_date=f"{t0}:00+00:00",
        ),
        steps=[
            Step(
                "env_check",
                "failed",
                start=f"{t0}:00+00:00",
                end=f"{t0}:01+00:00",
                attempt=1,
                error="No migration file nope.zip in the store",
                failed=True,
            ),
            Step("plan", "upstream_failed", failed=True),
            Step("collect_logs", "failed", start=f"{t0}:02+00:00", end=f"{t0}:03+00:00"),
        ],
        report=None,
        summary=None,
        migration_file=unreadable_file("nope.zip", "No migration file nope.zip in the store"),
        target=None,
        params={"migration_file": "nope.zip"},
        checks={StepKind.APP_RESTART: {"status": "not needed"}},
        ended_at=f"{t0}:03+00:00",
    )
    folder = store["root"] / "logs" / "unknown" / store_layout.safe_component(run_id)
    run_files.write_files(folder, record)
    page = client.get(f"{P}/runs/unknown/{store_layout.safe_component(run_id)}", headers=admin).text
    assert "Run without a migration file" not in page
    assert "<h1>nope.zip" in page
    assert 'id="file-unread"' in page and "No migration file nope.zip in the store" in page
    checks = page.split("<h2>Checks</h2>", 1)[1].split("</section>", 1)[0]
    assert 'id="checks-not-run"' in checks and "The checks did not run" in checks
    assert "stopped at <strong>env_check</strong> before them" in checks
    assert "(the migration file could not be read)" in checks
    assert "The checks stopped the migration" not in checks
