"""The small migration file the archive tests damage (``good_file`` in conftest.py is it), and
how they check that a damaged file is refused. Forging helpers: tests/factories.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_manager.errors import ArchiveError
from tests.pgtools import apply_file, tables_text

ITEMS_SOURCE = """
CREATE TABLE items (id integer PRIMARY KEY, name text, data jsonb);
INSERT INTO items SELECT g, 'source ' || g, jsonb_build_object('n', g) FROM generate_series(1, 500) g;
CREATE TABLE fresh (id integer PRIMARY KEY, v text);
INSERT INTO fresh VALUES (1, 'new table');
"""
ITEMS_TARGET = """
CREATE TABLE items (id integer PRIMARY KEY, name text, data jsonb);
INSERT INTO items VALUES (1, 'target 1', NULL), (999, 'target only', '{}');
"""
OVERWRITE_USER = {"rules": {"user": {"default": "overwrite"}}}
"""``make_file`` keywords of the good file: every user table overwritten."""


def assert_refused(path: Path, target: str, match: str) -> ArchiveError:
    """Executing ``path`` raises ArchiveError matching ``match``; the target is unchanged."""
    before = tables_text(target)
    with pytest.raises(ArchiveError, match=match) as info:
        apply_file(path, target)
    assert tables_text(target) == before
    return info.value
