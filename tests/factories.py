"""Test data built one way.

- ``connection_document``: the Airflow connection document for a PostgreSQL DSN. The same body
  (conn_type postgres, host, port, login, password, schema, extra) is what ``AIRFLOW_CONN_*``
  variables, the REST API and the hook tests are given.
- ``manifest_table``: one table entry of a manifest, as migration_create writes it;
- damaged or forged migration files, made from a good one with Python's zipfile: ``rewrite``
  (member by member), ``edit_manifest``, ``flip_bytes``; ``first_member`` names the data
  member of table ``items`` (the table of tests/integration/archive_tools.py's file).

Migration files themselves are made by the engine: ``tests.pgtools.make_file``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def connection_document(
    dsn: str, *, extra: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """Airflow's JSON connection form of ``dsn``; ``fields`` add or override keys
    (``password=...``, ``description=...``); ``extra`` is left out when not given."""
    parts = urlsplit(dsn)
    doc: dict[str, Any] = {
        "conn_type": "postgres",
        "host": parts.hostname,
        "port": parts.port or 5432,
        "login": parts.username,
        "password": parts.password,
        "schema": parts.path.lstrip("/"),
    }
    if extra is not None:
        doc["extra"] = extra
    doc.update(fields)
    return doc


# --- manifests ----------------------------------------------------------------------------------


def manifest_table(name: str, rule: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """A manifest's ``tables`` entry as migration_create writes it: table ``name`` with one text
    key column ``x_uid``, under ``rule``, with ``data`` (its data member) or None."""
    return {
        "name": name,
        "schema": "public",
        "group": "system",
        "rule": rule,
        "rule_source": "system default (profile)",
        "key_kind": "string",
        "companion_of": [],
        "structure": {
            "name": name,
            "schema": "public",
            "columns": [{"name": "x_uid", "type": "character varying(255)", "nullable": False}],
            "primary_key": ["x_uid"],
            "primary_key_name": f"{name}_pkey",
            "unique_constraints": [],
            "indexes": [],
            "foreign_keys": [],
            "check_constraints": [],
            "sequences": [],
            "comment": None,
            "types": [],
        },
        "estimated_rows": (data or {}).get("rows", 0),
        "data": data,
    }


# --- damaged and forged migration files ---------------------------------------------------------


def rewrite(
    src: Path,
    dst: Path,
    change: Callable[[str, bytes], bytes | None] = lambda name, data: data,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Copy a zip member by member through ``change`` (None drops a member), plus ``extra``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(zipfile.ZipInfo(name), data)
    return dst


def edit_manifest(
    src: Path, dst: Path, edit: Callable[[dict[str, Any]], None], *, resum: bool
) -> Path:
    """Change manifest.json; with ``resum`` also write its new checksum (a consistent forgery)."""
    from migration_manager.archive import MANIFEST, MANIFEST_SUM

    with zipfile.ZipFile(src) as z:
        manifest = json.loads(z.read(MANIFEST))
    edit(manifest)
    body = json.dumps(manifest).encode()

    def change(name: str, data: bytes) -> bytes:
        if name == MANIFEST:
            return body
        if name == MANIFEST_SUM and resum:
            return hashlib.sha256(body).hexdigest().encode() + b"\n"
        return data

    return rewrite(src, dst, change)


def data_offset(path: Path, member: str) -> tuple[int, int]:
    """Where ``member``'s stored bytes start in the file, and how many there are."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def flip_bytes(src: Path, dst: Path, member: str) -> Path:
    """Flip a few bytes in the middle of ``member``'s data, in place (the zip's CRC now lies too)."""
    blob = bytearray(src.read_bytes())
    start, size = data_offset(src, member)
    assert size > 64, "the member is too small to damage in the middle"
    for i in range(start + size // 2, start + size // 2 + 8):
        blob[i] ^= 0xFF
    dst.write_bytes(bytes(blob))
    return dst


def first_member(path: Path) -> str:
    """The data member of table ``items`` in the migration file ``path``."""
    from migration_manager.archive import MANIFEST

    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read(MANIFEST))
    items = next(t for t in manifest["tables"] if t["name"] == "items")
    return str(items["data"]["member"])
