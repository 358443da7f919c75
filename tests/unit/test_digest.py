"""Streaming sha256 (``migration_manager.digest``): the one helper for files and streams."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from migration_manager import digest

DATA = bytes(range(256)) * ((digest.CHUNK * 2 + 1000) // 256)  # more than two chunks


def test_copy_hashes_and_writes_every_chunk() -> None:
    out = io.BytesIO()
    found = digest.copy(io.BytesIO(DATA), out)
    assert found.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert found.size == len(DATA) and out.getvalue() == DATA


def test_copy_without_a_destination_only_hashes() -> None:
    found = digest.copy(io.BytesIO(b"abc"))
    assert (found.hexdigest(), found.size) == (hashlib.sha256(b"abc").hexdigest(), 3)
    empty = digest.copy(io.BytesIO(b""))
    assert (empty.hexdigest(), empty.size) == (hashlib.sha256(b"").hexdigest(), 0)


def test_copy_refuses_more_than_the_limit() -> None:
    assert digest.copy(io.BytesIO(DATA), limit=len(DATA)).size == len(DATA)
    out = io.BytesIO()
    with pytest.raises(digest.TooLarge) as caught:
        digest.copy(io.BytesIO(DATA), out, limit=len(DATA) - 1)
    assert caught.value.limit == len(DATA) - 1
    assert len(out.getvalue()) <= len(DATA) - 1  # the chunk that crossed it was not written


def test_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    found = digest.file_digest(path)
    assert (found.hexdigest(), found.size) == (hashlib.sha256(DATA).hexdigest(), len(DATA))
    with pytest.raises(OSError):
        digest.file_digest(tmp_path / "missing.bin")
