"""A damaged or foreign migration file is refused with ArchiveError, and the target stays as it was.

Files are made by the engine from a small real source (``good_file``: tests/integration/conftest.py
and archive_tools.py), then broken with Python's zipfile (tests/factories.py): bytes flipped in a
data member, the file cut short, the manifest edited, another format version, members whose path
leaves the archive.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migration_manager.archive import MANIFEST_SUM, ArchiveReader, open_archive
from migration_manager.errors import ApplyError, ArchiveError
from migration_manager.execute import apply_unit, prepare
from tests.factories import edit_manifest, first_member, flip_bytes, rewrite
from tests.integration.archive_tools import OVERWRITE_USER, assert_refused
from tests.pgtools import apply_file, make_file, rows, sql, table_text, tables_text

pytestmark = pytest.mark.postgres

# --------------------------------------------------------------------------- baseline


def test_the_intact_file_applies(good_file: Path, source: str, target: str) -> None:
    with open_archive(good_file) as reader:
        reader.verify()
    apply_file(good_file, target)
    assert table_text(target, "items") == table_text(source, "items")
    assert table_text(target, "fresh") == ['(1,"new table")']


# --------------------------------------------------------------------------- damaged data


def test_corrupt_data_member_is_refused_by_prepare(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    bad = flip_bytes(good_file, tmp_path / "bad.zip", first_member(good_file))
    member = re.escape(first_member(good_file))
    # the manifest is intact: the file opens, and prepare's verify() reads every member
    with open_archive(bad) as reader, pytest.raises(ArchiveError, match=f"member {member}"):
        prepare(reader, target)
    assert_refused(bad, target, f"member {member} (is damaged|fails its checksum)")


def test_corrupt_data_member_is_caught_while_streaming_and_the_unit_rolls_back(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    """apply_unit without a prior verify(): the damage surfaces mid-load, nothing is committed."""
    bad = flip_bytes(good_file, tmp_path / "bad.zip", first_member(good_file))
    before = tables_text(target)
    with open_archive(bad) as reader:
        units = [u for u in reader.manifest.units]
        items_unit = next(u for u in units if "items" in u.tables)
        with pytest.raises((ArchiveError, ApplyError), match="items: ") as info:
            apply_unit(reader, target, items_unit)
    assert isinstance(info.value, ApplyError)
    assert info.value.terminal, "a damaged file stays damaged: retrying cannot help"
    assert tables_text(target) == before


def _swap_member(good_file: Path, other: Path, dst: Path) -> Path:
    """``good_file`` with ``items``' member taken from ``other``: valid zip, valid zstd, valid COPY.

    Only the manifest's sha256 of the member can tell: the rows would load fine.
    """
    member = first_member(good_file)
    assert first_member(other) == member
    with zipfile.ZipFile(other) as z:
        replacement = z.read(member)
    return rewrite(good_file, dst, lambda name, data: replacement if name == member else data)


@pytest.fixture
def swapped_file(good_file: Path, source: str, tmp_path: Path) -> Path:
    sql(source, "UPDATE items SET name = 'tampered ' || id")
    other = tmp_path / "other.zip"
    make_file(source, other, **OVERWRITE_USER)
    return _swap_member(good_file, other, tmp_path / "swapped.zip")


def test_swapped_data_member_fails_its_checksum_in_prepare(swapped_file: Path, target: str) -> None:
    member = re.escape(first_member(swapped_file))
    with (
        open_archive(swapped_file) as reader,
        pytest.raises(ArchiveError, match=f"member {member} fails its checksum"),
    ):
        prepare(reader, target)
    assert_refused(swapped_file, target, f"member {member} fails its checksum")


def test_swapped_data_member_loads_then_fails_its_checksum_and_rolls_back(
    swapped_file: Path, target: str
) -> None:
    """The member decompresses and parses as COPY: only its checksum tells, and the unit rolls back."""
    before = tables_text(target)
    with open_archive(swapped_file) as reader:
        for u in reader.manifest.units:
            unit = u
            if "items" not in unit.tables:
                continue
            with pytest.raises(ApplyError, match="items: .*fails its checksum") as info:
                apply_unit(reader, target, unit)
            assert isinstance(info.value.__cause__, ArchiveError)
    assert tables_text(target) == before
    assert rows(target, "SELECT count(*) FROM items WHERE name LIKE 'tampered%'") == [(0,)]


def test_swapped_member_into_an_empty_table_is_rolled_back_too(
    swapped_file: Path, target: str
) -> None:
    """Overwrite of an empty table streams straight into it (no staging): still all or nothing."""
    sql(target, "DELETE FROM items")
    with open_archive(swapped_file) as reader:
        unit = next(u for u in reader.manifest.units if "items" in u.tables)
        with pytest.raises(ApplyError, match="fails its checksum"):
            apply_unit(reader, target, unit)
    assert table_text(target, "items") == []


# --------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file_is_refused(
    good_file: Path, target: str, tmp_path: Path, keep: float
) -> None:
    blob = good_file.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(blob[: int(len(blob) * keep)])
    assert_refused(cut, target, "is not a migration file or is truncated .*; create it again")


def test_empty_and_foreign_files_are_refused(target: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.zip"
    empty.write_bytes(b"")
    assert_refused(empty, target, "is not a migration file or is truncated")
    text = tmp_path / "notes.txt"
    text.write_text("COPY items FROM STDIN;\n")
    assert_refused(text, target, "is not a migration file or is truncated")


def test_missing_file_is_refused(target: str, tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.zip", target, "does not exist; check the migration_file param")


def test_zip_without_a_manifest_is_refused(good_file: Path, target: str, tmp_path: Path) -> None:
    bad = rewrite(
        good_file, tmp_path / "bad.zip", lambda n, d: None if n.startswith("manifest") else d
    )
    assert_refused(bad, target, "has no manifest; it is not a migration file of this tool")


# --------------------------------------------------------------------------- the manifest


def test_tampered_manifest_fails_its_checksum(good_file: Path, target: str, tmp_path: Path) -> None:
    def to_upsert(manifest: dict[str, Any]) -> None:
        for table in manifest["tables"]:
            table["rule"] = "upsert"

    bad = edit_manifest(good_file, tmp_path / "bad.zip", to_upsert, resum=False)
    assert_refused(
        bad,
        target,
        "the manifest fails its checksum \\(modified or corrupt\\); create the migration file again",
    )


def test_manifest_with_a_damaged_checksum_member(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    bad = rewrite(
        good_file, tmp_path / "bad.zip", lambda n, d: b"\xff\xfe" if n == MANIFEST_SUM else d
    )
    assert_refused(bad, target, "the manifest is damaged")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda m: m.update(format_version=2),
            "is format version 2; this tool reads version 1. Create the file with the same "
            "version of the tool that executes it",
        ),
        (lambda m: m.pop("format_version"), "is format version None; this tool reads version 1"),
        (
            lambda m: m.update(format="nocobase-backup"),
            "is of format 'nocobase-backup', not 'migration-manager'",
        ),
    ],
    ids=["version 2", "no version", "other format"],
)
def test_other_format_or_version_is_refused(
    good_file: Path,
    target: str,
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None],
    match: str,
) -> None:
    bad = edit_manifest(good_file, tmp_path / "bad.zip", edit, resum=True)
    assert_refused(bad, target, re.escape(match))


def test_manifest_naming_a_member_the_archive_lacks(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    member = first_member(good_file)
    bad = rewrite(good_file, tmp_path / "bad.zip", lambda n, d: None if n == member else d)
    assert_refused(
        bad,
        target,
        re.escape(
            f"the manifest names member '{member}', which the archive lacks or may not contain"
        ),
    )


def test_manifest_naming_a_member_outside_the_layout(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    def point_outside(manifest: dict[str, Any]) -> None:
        manifest["members"]["../evil"] = {"sha256": "0" * 64, "bytes": 1}

    bad = edit_manifest(good_file, tmp_path / "bad.zip", point_outside, resum=True)
    assert_refused(bad, target, re.escape("the manifest names member '../evil'"))


# --------------------------------------------------------------------------- members that escape


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "/etc/evil",
        "data/../../evil.copy.zst",
        "data/0001.copy.zst/../../evil",
        "notes.txt",
    ],
)
def test_member_path_escaping_the_archive_is_refused(
    good_file: Path, target: str, tmp_path: Path, name: str
) -> None:
    bad = rewrite(good_file, tmp_path / "bad.zip", extra={name: b"boom"})
    with zipfile.ZipFile(bad) as z:
        assert name in z.namelist()
    assert_refused(
        bad,
        target,
        re.escape(
            f"has an unexpected member {name!r} (path outside the archive layout); refusing it"
        ),
    )


def test_reader_refuses_escaping_member_from_any_file_object(
    good_file: Path, tmp_path: Path
) -> None:
    bad = rewrite(good_file, tmp_path / "bad.zip", extra={"../evil": b"boom"})
    with bad.open("rb") as fh, pytest.raises(ArchiveError, match="unexpected member '../evil'"):
        ArchiveReader(fh, name="upload")
