"""The backup record (``migration_manager.backup.record``): its JSON, written and read in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_manager.backup.record import (
    BackupRecord,
    check_backup_id,
    expired,
    new_backup_id,
    read_record,
    read_records,
)
from migration_manager.errors import BackupError, ConfigError

RECORD = BackupRecord(
    backup_id="bk-20260101T120000Z-1a2b3c",
    created_at="2026-01-01T12:00:00.000+00:00",
    database="prod",
    server_version="15.10",
    pg_dump_version="15.10",
    size=4096,
    sha256="cd" * 32,
    seconds=0.4,
    fingerprints={"public.users": (16, "-12"), "public.orders": (300, "99")},
    schemas=("public",),
    profile="nocobase",
    app_version="1.6.0",
    app_settings={"DB_SCHEMA": "public"},
    migration_id="mig-1",
    run_id="run-1",
    target_conn_id="prod",
    dump_file="bk-20260101T120000Z-1a2b3c.dump",
)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / f"{RECORD.backup_id}.json"
    path.write_text(RECORD.to_json())
    assert read_record(path) == RECORD
    assert (RECORD.tables, RECORD.rows) == (2, 316)
    doc = json.loads(path.read_text())
    assert doc["format"] == "migration-manager-backup" and doc["format_version"] == 1
    assert doc["fingerprints"] == {"public.orders": [300, "99"], "public.users": [16, "-12"]}


def test_dump_file_defaults_to_the_id() -> None:
    doc = RECORD.model_dump(mode="json")
    del doc["dump_file"]
    assert BackupRecord.parse(doc).dump_file == f"{RECORD.backup_id}.dump"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "Not a backup record"),
        ({"format_version": 2}, "newer than this tool's"),
        ({"format_version": "two"}, "is not a number"),
        ({"fingerprints": None}, "incomplete or malformed"),
        ({"fingerprints": {"public.t": [1]}}, "incomplete or malformed"),
        ({"size": None, "sha256": None, "backup_id": None}, "incomplete or malformed"),
    ],
)
def test_records_it_cannot_read_name_the_file(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    doc = {**RECORD.model_dump(mode="json"), **change}
    if doc["backup_id"] is None:
        del doc["backup_id"]
    path = tmp_path / "bk.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BackupError, match=message) as caught:
        read_record(path)
    assert str(path) in str(caught.value)


def test_unparsable_json(tmp_path: Path) -> None:
    path = tmp_path / "bk.json"
    path.write_text('{"format": ')
    with pytest.raises(BackupError, match=f"Backup record {path} is unreadable"):
        read_record(path)


def test_read_records_newest_first_skipping_what_it_cannot_read(tmp_path: Path) -> None:
    assert read_records(tmp_path / "missing") == []
    newer = RECORD.model_copy(
        update=dict(
            backup_id="bk-20260102T120000Z-000000", created_at="2026-01-02T12:00:00.000+00:00"
        )
    )
    for rec in (RECORD, newer):
        (tmp_path / f"{rec.backup_id}.json").write_text(rec.to_json())
    (tmp_path / "bk-broken.json").write_text("not json")
    (tmp_path / "bk-other.json").write_text(json.dumps({"backup_id": "bk-x"}))
    (tmp_path / f"{RECORD.backup_id}.dump").write_bytes(b"PGDMP")
    assert [r.backup_id for r in read_records(tmp_path)] == [newer.backup_id, RECORD.backup_id]


def test_ids_and_expiry() -> None:
    made = new_backup_id()
    assert check_backup_id(f" {made} ") == made
    with pytest.raises(ConfigError, match="is not a backup id"):
        check_backup_id("../etc")
    older = RECORD.model_copy(
        update=dict(backup_id="bk-old", created_at="2025-01-01T00:00:00+00:00")
    )
    oldest = RECORD.model_copy(
        update=dict(backup_id="bk-oldest", created_at="2024-01-01T00:00:00+00:00")
    )
    assert expired([oldest, RECORD, older], 1) == ["bk-old", "bk-oldest"]
    assert expired([older, RECORD, oldest], 2) == ["bk-oldest"]
    assert expired([RECORD, older], 2) == []
    with pytest.raises(ConfigError, match="backups_to_keep"):
        expired([RECORD], 0)
