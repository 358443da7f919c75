"""Hostile migration files: members that inflate, duplicated members, manifests that lie, signatures.

Files are made by the engine from a small real source (PostgreSQL), then altered with Python's
zipfile. Every refusal names the member or the table and key, and leaves the target untouched.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from migration_manager.archive import MANIFEST, MANIFEST_SUM, open_archive
from migration_manager.errors import ApplyError, ArchiveError
from migration_manager.execute import apply_unit
from migration_manager.manifest import validate
from migration_manager.signing import SIGNATURE_MEMBER, SigningKey, Trust, TrustedKey, generate
from tests.factories import edit_manifest, first_member, flip_bytes, rewrite
from tests.integration.archive_tools import assert_refused
from tests.pgtools import signing_key, tables_text

pytestmark = pytest.mark.postgres

GIB = 1 << 30


def trust(*keys: SigningKey, allow_unsigned: bool = False) -> Trust:
    return Trust(
        tuple(TrustedKey(k.signer, k.private_key.public_key()) for k in keys), allow_unsigned
    )


def _inflating(src: Path, dst: Path, member: str, filler: bytes, total: int) -> Path:
    """``src`` with ``member`` deflated and padded with ``filler`` up to ``total`` bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename != member:
                zout.writestr(info.filename, data)
                continue
            bomb = zipfile.ZipInfo(member)
            bomb.compress_type = zipfile.ZIP_DEFLATED
            with zout.open(bomb, "w", force_zip64=True) as out:
                out.write(data)
                block = filler * ((1 << 20) // len(filler))
                left = total - len(data)
                while left > 0:
                    out.write(block[: min(len(block), left)])
                    left -= len(block)
    return dst


# --------------------------------------------------------------------------- limits


def test_a_checksum_member_inflating_to_1_gib_is_refused_naming_member_and_limit(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    """Issue 13's case: digest, newline, 1 GiB of spaces (strip() kept the digest matching)."""
    bomb = _inflating(good_file, tmp_path / "bomb.zip", MANIFEST_SUM, b" ", GIB)
    assert bomb.stat().st_size < 4 << 20
    assert_refused(
        bomb, target, "member manifest.json.sha256 is larger than its limit of 128 bytes"
    )


def test_a_manifest_over_its_cap_is_refused(good_file: Path, target: str, tmp_path: Path) -> None:
    big = _inflating(good_file, tmp_path / "big.zip", MANIFEST, b" ", (64 << 20) + 1)
    assert_refused(big, target, "member manifest.json is larger than its limit of 67108864 bytes")


def test_a_compressed_data_member_is_refused(good_file: Path, target: str, tmp_path: Path) -> None:
    member = first_member(good_file)
    with zipfile.ZipFile(good_file) as zin, zipfile.ZipFile(tmp_path / "d.zip", "w") as zout:
        for info in zin.infolist():
            kind = zipfile.ZIP_DEFLATED if info.filename == member else zipfile.ZIP_STORED
            zout.writestr(info.filename, zin.read(info.filename), compress_type=kind)
    assert_refused(tmp_path / "d.zip", target, f"member {member} is compressed in the ZIP")


def test_a_data_member_larger_than_declared_is_cut_at_its_declared_size(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    member = first_member(good_file)
    grown = rewrite(
        good_file, tmp_path / "g.zip", lambda n, d: d + b"\0" * 4096 if n == member else d
    )
    err = assert_refused(grown, target, f"member {member} fails its checksum: it holds more than")
    assert "bytes its manifest declares (its limit)" in str(err)


def test_a_zstd_stream_inflating_beyond_raw_bytes_is_refused_and_rolled_back(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    """The stored bytes are intact; the manifest (re-signed by a trusted key) declares fewer
    decompressed bytes than the stream gives: refused while loading, the unit rolls back."""
    key = signing_key()

    def shrink(m: dict[str, Any]) -> None:
        for t in m["tables"]:
            if t["data"]:
                t["data"]["raw_bytes"] = 100

    edited = edit_manifest(good_file, tmp_path / "e.zip", shrink, resum=True)
    resigned = _resign(edited, tmp_path / "r.zip", key)
    before = tables_text(target)
    with open_archive(resigned, trust=trust(key)) as reader:
        unit = next(u for u in reader.manifest.units if "items" in u.tables)
        with pytest.raises(ApplyError, match="inflates beyond the 100 bytes its manifest declares"):
            apply_unit(reader, target, unit)
    assert tables_text(target) == before


def test_duplicated_member_names_are_refused(good_file: Path, target: str, tmp_path: Path) -> None:
    member = first_member(good_file)
    dup = tmp_path / "dup.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it writes
        with zipfile.ZipFile(good_file) as zin, zipfile.ZipFile(dup, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info.filename))
            zout.writestr(member, b"a second copy, which Python's zipfile would read")
    assert_refused(dup, target, f"holds member\\(s\\) '{member}' more than once")


def test_a_damaged_data_member_says_to_create_the_file_again(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    bad = flip_bytes(good_file, tmp_path / "bad.zip", first_member(good_file))
    err = assert_refused(bad, target, "create the migration file again")
    assert first_member(good_file) in str(err)


# --------------------------------------------------------------------------- the manifest model


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["tables"][0].pop("rule"), "table 'items': key 'rule': Field required"),
        (
            lambda m: m["tables"][0].update(rule="truncate-everything"),
            "table 'items': key 'rule': Input should be 'schema-only', 'overwrite', 'upsert', 'insert-ignore' or 'skip'",
        ),
        (
            lambda m: m["tables"][0].update(drop_database=True),
            "table 'items': key 'drop_database': Extra inputs",
        ),
        (lambda m: m["tables"][0]["data"].update(rows=-1), "table 'items': key 'data.rows'"),
        (lambda m: m["tables"][0]["data"].update(rows="500"), "table 'items': key 'data.rows'"),
        (
            lambda m: m["tables"][0]["structure"]["columns"][0].update(name="x" * 64),
            "table 'items': key 'structure.columns.0.name'.*at most 63 bytes",
        ),
        (
            lambda m: m["tables"][0]["structure"]["columns"][0].update(name="a\u0000b"),
            "key 'structure.columns.0.name'.*NUL",
        ),
        (lambda m: m["tables"][0].update(name=""), "tables\\[0\\]: key 'name'.*may not be empty"),
        (
            lambda m: m["tables"][0].update(rule="schema-only"),
            "table 'items': key 'data': rule 'schema-only' moves no rows",
        ),
        (lambda m: m["units"][0]["tables"].append("ghost"), "key 'tables': 'ghost' is not a table"),
        (lambda m: m.pop("units"), "key 'units': Field required"),
        (lambda m: m["members"].clear(), "key 'data.member'.*is not listed in 'members'"),
    ],
)
def test_an_invalid_manifest_is_refused_naming_table_and_key(
    good_file: Path, target: str, tmp_path: Path, edit: Any, message: str
) -> None:
    m = json.loads(zipfile.ZipFile(good_file).read(MANIFEST))
    m["tables"].sort(key=lambda t: t["name"] != "items")  # items first
    edit(m)
    with pytest.raises(ArchiveError, match=message):
        validate(m, name="f.zip")
    forged = edit_manifest(
        good_file, tmp_path / "x.zip", lambda d: (d.clear(), d.update(m)), resum=True
    )
    assert_refused(forged, target, "the manifest is not (valid|consistent)|names member")


@pytest.mark.parametrize(
    "name",
    [
        'bad"; COMMIT; CREATE ROLE evil; --',
        "it's",
        "dot.ted.name",
        "with space",
        "ünïcödé_表",
        "é" * 31 + "x",  # 63 bytes of UTF-8
        "select",
    ],
)
def test_hostile_but_valid_postgresql_names_pass_the_model(good_file: Path, name: str) -> None:
    m = json.loads(zipfile.ZipFile(good_file).read(MANIFEST))
    for t in m["tables"]:
        t["schema"] = name
        t["structure"]["schema"] = name
        t["structure"]["columns"][0]["name"] = name
    m["source"]["schema"] = name
    model = validate(m, name="f.zip")
    assert model.source.schema_ == name


# --------------------------------------------------------------------------- signatures


def _resign(src: Path, dst: Path, key: SigningKey | None) -> Path:
    """``src`` with its signature member replaced by ``key``'s (or removed)."""
    from migration_manager.signing import sign

    body = zipfile.ZipFile(src).read(MANIFEST)
    signature = sign(body, key) if key is not None else None
    rewrite(src, dst, lambda n, d: None if n == SIGNATURE_MEMBER else d)
    if signature is not None:
        with zipfile.ZipFile(dst, "a") as z:
            z.writestr(SIGNATURE_MEMBER, signature)
    return dst


def test_a_signed_file_verifies_and_names_its_trusted_signer(good_file: Path) -> None:
    key = signing_key()
    with open_archive(good_file, trust=trust(SigningKey("release-bot", key.private_key))) as reader:
        assert reader.signature.status == "verified"
        assert reader.signature.signer == "release-bot"  # the trusted name, not the file's claim
        assert reader.signature.claimed_signer == key.signer


def test_unsigned_untrusted_and_forged_files_are_refused_unless_allowed(
    good_file: Path, target: str, tmp_path: Path
) -> None:
    key = signing_key()
    unsigned = _resign(good_file, tmp_path / "u.zip", None)
    stranger = _resign(good_file, tmp_path / "s.zip", SigningKey("mallory", generate().private_key))

    def forge(m: dict[str, Any]) -> None:
        m["source"]["database"] = "forged"

    forged = edit_manifest(good_file, tmp_path / "f.zip", forge, resum=True)  # old signature kept
    before = tables_text(target)
    for path, message in (
        (unsigned, "is not signed; refusing it"),
        (stranger, "is signed by a key this side does not trust .*claims 'mallory'"),
        (forged, "has a signature that does not match its manifest"),
    ):
        with (
            pytest.raises(ArchiveError, match=message) as info,
            open_archive(path, trust=trust(key)),
        ):
            pass
        assert "allow_unsigned" in str(info.value)
        with open_archive(path, trust=trust(key, allow_unsigned=True)) as reader:
            assert reader.signature.status != "verified"
    assert tables_text(target) == before


def test_a_manifest_is_signed_exactly(good_file: Path) -> None:
    """The signature member covers the manifest's bytes; the manifest lists every member's sha256."""
    with zipfile.ZipFile(good_file) as z:
        body = z.read(MANIFEST)
        doc = json.loads(z.read(SIGNATURE_MEMBER))
        manifest = json.loads(body)
        for member, info in manifest["members"].items():
            assert hashlib.sha256(z.read(member)).hexdigest() == info["sha256"]
    assert doc["algorithm"] == "ed25519" and doc["signer"] == signing_key().signer
    import base64

    signing_key().private_key.public_key().verify(base64.b64decode(doc["signature"]), body)
