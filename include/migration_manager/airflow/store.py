"""The migration store: where migration files (and later logs and backups) live.

``MIGRATION_STORE`` is an ``ObjectStoragePath`` URI (``file:///srv/migrations``,
``s3://bucket/migrations`` with an ``aws_default``-style connection, ...). Unset, it is
``$AIRFLOW_HOME/migrations``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from airflow.sdk import ObjectStoragePath

from migration_manager.errors import ConfigError

FILES = "files"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def store_root() -> ObjectStoragePath:
    uri = os.environ.get("MIGRATION_STORE", "").strip()
    if not uri:
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        uri = Path(home, "migrations").resolve().as_uri()
    return ObjectStoragePath(uri)


def migration_file_path(ref: str) -> ObjectStoragePath:
    """A migration file from a param: a full URI, or a file name / id inside the store."""
    ref = (ref or "").strip()
    if not ref:
        raise ConfigError(
            "migration_file is empty: give the URI printed by migration_create, or a file name in the store"
        )
    if "://" in ref:
        return ObjectStoragePath(ref)
    if ref.startswith("/"):
        return ObjectStoragePath(Path(ref).resolve().as_uri())
    if not _SAFE_NAME.match(ref):
        raise ConfigError(
            f"migration_file {ref!r} is not a file name in the store (no paths, no '..'); give a full URI instead"
        )
    name = ref if ref.endswith(".zip") else f"{ref}.zip"
    return store_root() / FILES / name


@contextmanager
def new_migration_file(migration_id: str) -> Iterator[tuple[IO[bytes], ObjectStoragePath]]:
    """A local temporary file to write; on success it is moved into the store."""
    dest = store_root() / FILES / f"{migration_id}.zip"
    with tempfile.NamedTemporaryFile(prefix="mm-", suffix=".zip", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        with tmp_path.open("w+b") as fh:
            yield fh, dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.protocol in ("file", "local", ""):
            shutil.move(str(tmp_path), dest.path)
        else:
            with tmp_path.open("rb") as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    finally:
        tmp_path.unlink(missing_ok=True)
