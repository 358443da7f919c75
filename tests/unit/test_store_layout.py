"""The store's folders (``migration_manager.store_layout``): every path the store uses, from one module."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from migration_manager import store_layout as layout
from migration_manager.errors import ConfigError


def test_paths_under_the_root() -> None:
    root = Path("/store")
    assert layout.migration_file(root, "m1.zip") == root / "files" / "m1.zip"
    names = layout.run_log_names("mig-1", "manual__2026-01-01T00:00:00+00:00")
    assert names == ("mig-1", "manual__2026-01-01T00_00_00_00_00")
    assert layout.run_log_dir(root, *names) == root / "logs" / "mig-1" / names[1]
    assert layout.lease_path(root, "sync_prod", "a:b") == root / "in_use" / "sync_prod__a_b.json"
    assert layout.backup_dir(root, "prod") == root / "backups" / "prod"
    assert layout.backup_record(root, "prod", "bk-1") == root / "backups" / "prod" / "bk-1.json"
    assert layout.backup_dump(root, "prod", "bk-1") == root / "backups" / "prod" / "bk-1.dump"
    assert (
        layout.target_record(root, "prod-1-2")
        == root / "targets" / "prod-1-2" / "fingerprints.json"
    )


def test_rollback_record_name_is_safe_and_distinct() -> None:
    root = Path("/store")
    run = "manual__2026-01-01T00:00:00+00:00"
    path = layout.rollback_record(root, "migration execute", run)
    tag = hashlib.sha1(f"migration execute\n{run}".encode()).hexdigest()[:10]
    assert (
        path
        == root
        / "rollbacks"
        / "migration_execute"
        / f"manual__2026-01-01T00_00_00_00_00-{tag}.json"
    )
    # run ids that differ only in an unsafe character still get their own record
    assert layout.rollback_record(root, "d", "a:b") != layout.rollback_record(root, "d", "a+b")


def test_keys_of_connection_ids() -> None:
    assert layout.safe_key(" prod db/1 ") == "prod_db_1"
    assert layout.safe_key("..") == ""
    assert layout.backup_key("prod.main") == "prod.main"
    with pytest.raises(ConfigError, match="target_conn_id is empty"):
        layout.backup_key(" ./ ")


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "run:1+00", ".hidden.", "ok-1_2.x"])
def test_components_are_one_safe_folder_name(value: str) -> None:
    assert "/" not in layout.safe_component(value) and layout.safe_component(value) not in (
        "",
        ".",
        "..",
    )


def test_migration_file_names() -> None:
    assert layout.MIGRATION_FILE.match("mig-20260101T000000Z-x.zip")
    for bad in ("../x.zip", "a/b.zip", ".x.zip", "x.tar", "x.zip/"):
        assert not layout.MIGRATION_FILE.match(bad)
