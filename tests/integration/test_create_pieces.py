"""create passes a table's COPY output on in ~1 MiB pieces (not a call per row): the rows
still arrive whole and in order, and an ``{{$env.NAME}}`` reference is still found wherever
it sits — in the first rows, after several MiB, in the very last row of a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_manager.archive import CHUNK
from tests.pgtools import apply_file, make_file, scalar, sql, table_text

pytestmark = pytest.mark.postgres

ROWS = 12_000  # 12,000 rows of ~1 KiB: about 12 MiB of COPY output, a dozen pieces


def test_rows_and_env_references_survive_the_pieces(
    source: str, target: str, tmp_path: Path
) -> None:
    sql(
        source,
        f"""
        CREATE TABLE pages (id integer PRIMARY KEY, body text);
        CREATE TABLE "applicationPlugins" (  -- what makes it a NocoBase database to the profile
            id serial PRIMARY KEY, name text, "packageName" text, version text, enabled boolean
        );
        INSERT INTO pages SELECT g, repeat(md5(g::text), 32) || CASE g
            WHEN 1 THEN '{{{{$env.FIRST_ROW}}}}'
            WHEN {ROWS // 2} THEN '{{{{ $env.DEEP_INSIDE }}}}'
            WHEN {ROWS} THEN '{{{{$env.LAST_ROW}}}}'
            ELSE '' END
        FROM generate_series(1, {ROWS}) g;  -- on disk (and in COPY) in id order
        """,
    )
    copied = scalar(source, "SELECT sum(octet_length(body) + 14) FROM pages")
    assert copied > 8 * CHUNK  # the table really spans many pieces

    path = tmp_path / "m.zip"
    # the nocobase profile scans rows for {{$env.NAME}}; an unknown table moves rows only by name
    rules = {"user": {"default": "overwrite", "independent": {"pages": "overwrite"}}}
    manifest = make_file(source, path, profile="nocobase", rules=rules)
    entry = next(t for t in manifest["tables"] if t["name"] == "pages")
    assert entry["data"]["rows"] == ROWS
    assert manifest["environment"]["referenced_unknown"] == [
        "DEEP_INSIDE",
        "FIRST_ROW",
        "LAST_ROW",
    ]

    applied = apply_file(path, target)
    assert applied["pages"].inserted == ROWS
    assert table_text(target, "pages") == table_text(source, "pages")
