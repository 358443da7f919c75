"""Retention of run logs and migration files in a store (a local folder), per target."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from migration_manager import retention
from migration_manager.backup.record import BackupRecord
from migration_manager.errors import ConfigError


def _log(root: Path, mid: str, run: str, target: str, started: str) -> None:
    folder = root / "logs" / mid / run
    folder.mkdir(parents=True)
    (folder / "migration.json").write_text(
        json.dumps(
            {
                "migration_id": mid,
                "run_id": run,
                "started_at": started,
                "target": {"conn_id": target},
                "migration_file": {"name": f"{mid}.zip"},
            }
        )
    )
    (folder / "migration.log").write_text("log")
    (root / "files").mkdir(exist_ok=True)
    (root / "files" / f"{mid}.zip").write_bytes(b"zip")


def _backup(root: Path, target: str, mid: str, run: str) -> None:
    folder = root / "backups" / target
    folder.mkdir(parents=True, exist_ok=True)
    record = BackupRecord(
        backup_id=f"bk-{mid}",
        created_at="2026-11-21T01:00:00.000+00:00",
        database=target,
        server_version="15.10",
        pg_dump_version="15.10",
        size=5,
        sha256="ab" * 32,
        seconds=0.1,
        fingerprints={"public.orders": (1, "7")},
        migration_id=mid,
        run_id=run,
        target_conn_id=target,
    )
    (folder / f"bk-{mid}.json").write_text(record.to_json())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """prod: runs of m1..m5 (m1 oldest); qa: a run of m2 too; m9 never run."""
    for i in range(1, 6):
        _log(tmp_path, f"m{i}", f"run{i}", "prod", f"2026-11-2{i}T02:00:00+00:00")
    _log(tmp_path, "m2", "qa_run", "qa", "2026-11-29T02:00:00+00:00")
    (tmp_path / "files" / "m9.zip").write_bytes(b"zip")
    _backup(tmp_path, "prod", "m1", "run1")  # a kept backup was taken for the run of m1
    retention.take_lease(tmp_path, "file:///x/files/m3.zip", dag_id="sync_prod", run_id="now")
    return tmp_path


def _logs(root: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in (root / "logs").glob("*/*")}


def _files(root: Path) -> set[str]:
    return {p.name for p in (root / "files").glob("*.zip")}


def test_prune_keeps_the_newest_and_what_is_in_use(store: Path) -> None:
    pruned = retention.prune(
        store, "prod", target_key="prod", files_to_keep=1, logs_to_keep=2, current=("m5", "run5")
    )
    # logs: run5, run4 kept (newest 2); run1 kept for its backup; run3, run2 removed
    assert sorted(pruned.logs) == ["m2/run2", "m3/run3"]
    assert _logs(store) == {"m5/run5", "m4/run4", "m1/run1", "m2/qa_run"}
    assert not (store / "logs" / "m3").exists()  # its migration folder went with its only run
    # files: m5 kept (newest); m4 removed; m3 leased by a running run; m2 also run against qa;
    # m1 a kept backup's; m9 never run
    assert pruned.files == ["m4.zip"]
    assert _files(store) == {"m5.zip", "m3.zip", "m2.zip", "m1.zip", "m9.zip"}
    assert "m1/run1" in pruned.kept_in_use and "m3.zip" in pruned.kept_in_use
    # pruning again changes nothing
    again = retention.prune(store, "prod", target_key="prod", files_to_keep=1, logs_to_keep=2)
    assert (again.logs, again.files) == ([], [])


def test_zero_keeps_everything(store: Path) -> None:
    before = (_logs(store), _files(store))
    pruned = retention.prune(store, "prod", target_key="prod", files_to_keep=0, logs_to_keep=0)
    assert (pruned.logs, pruned.files) == ([], [])
    assert (_logs(store), _files(store)) == before


def test_leases_and_in_use(store: Path) -> None:
    assert retention.leases(store) == {"m3.zip": ["sync_prod/now"]}
    assert retention.in_use(store, "m3.zip") == ["used by the running run sync_prod/now"]
    assert retention.in_use(store, "m1.zip") == ["a kept backup of target prod was taken for it"]
    assert retention.in_use(store, "m4.zip") == []
    # a lease older than STALE_LEASE_HOURS is a run that died
    later = datetime.now(UTC) + timedelta(hours=retention.STALE_LEASE_HOURS + 1)
    assert retention.leases(store, now=later) == {}
    retention.release_lease(store, dag_id="sync_prod", run_id="now")
    assert retention.in_use(store, "m3.zip") == []


@pytest.mark.parametrize(("value", "message"), [(-1, "must be 0"), ("many", "not a whole number")])
def test_bad_keep_values(store: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        retention.prune(store, "prod", target_key="prod", files_to_keep=value, logs_to_keep=1)


def test_previews_files_beyond_the_newest_are_pruned(tmp_path: Path) -> None:
    """A preview (a dry-run sync) leaves <id>.preview.zip: only the newest few are kept, never
    one in use or the current run's; other migration files are not touched."""
    import os

    files = tmp_path / "files"
    files.mkdir()
    (files / "real.zip").write_bytes(b"zip")
    for i in range(6):
        path = files / f"p{i}.preview.zip"
        path.write_bytes(b"zip")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # p5 newest
    retention.take_lease(tmp_path, "p0.preview.zip", dag_id="migration_sync", run_id="now")
    removed = retention.prune_previews(tmp_path, keep=3, current_file="p1.preview.zip")
    assert sorted(removed) == ["p2.preview.zip"]
    assert _files(tmp_path) == {
        "real.zip",
        "p0.preview.zip",
        "p1.preview.zip",
        "p3.preview.zip",
        "p4.preview.zip",
        "p5.preview.zip",
    }
    assert retention.prune_previews(tmp_path, keep=3) == ["p1.preview.zip"]
