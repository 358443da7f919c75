"""Peak memory of the migration file reader on a small member that inflates to 1 GiB.

    python bench/reader_bomb.py [KIND ...]     KIND: sum (default), manifest, data

Builds, in a temporary directory, a migration file whose member KIND is deflated in the ZIP
and inflates to 1 GiB (about 1 MiB on disk), then opens and verifies it with the engine's
reader (``open_archive`` + ``verify``) in a child process, and prints one JSON line per file:
its size, whether the reader refused it (and the message), the seconds and the child's peak
RSS (VmHWM). ``sum`` is the case reported in issue 13 (hex digest, a newline, 1 GiB of
spaces: the digest still matches after ``strip()``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GIB = 1 << 30
CHUNK = 1 << 20

CHILD = r"""
import json, sys, time
from pathlib import Path
from migration_manager.archive import open_archive
from migration_manager.errors import MigrationError
started = time.monotonic()
outcome = {"refused": False, "message": None}
try:
    with open_archive(Path(sys.argv[1])) as reader:
        reader.verify()
except MigrationError as exc:
    outcome = {"refused": True, "message": str(exc)[:300]}
rss = 0.0
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        rss = int(line.split()[1]) / 1024
print(json.dumps({**outcome, "seconds": round(time.monotonic() - started, 2), "rss_mb": round(rss, 1)}))
"""


def _table(member: str) -> dict[str, object]:
    """One table whose rows are in ``member`` (declared: 1 MiB of COPY)."""
    return {
        "name": "t",
        "schema": "public",
        "group": "user",
        "rule": "overwrite",
        "rule_source": "user default",
        "key_kind": "integer",
        "companion_of": [],
        "structure": {
            "name": "t",
            "schema": "public",
            "columns": [{"name": "id", "type": "integer", "nullable": False}],
            "primary_key": ["id"],
            "primary_key_name": "t_pkey",
            "unique_constraints": [],
            "indexes": [],
            "foreign_keys": [],
            "check_constraints": [],
            "sequences": [],
            "comment": None,
            "types": [],
        },
        "estimated_rows": 0,
        "data": {
            "member": member,
            "columns": ["id"],
            "rows": 1,
            "raw_bytes": CHUNK,
            "format": "binary",
        },
    }


def manifest(members: dict[str, dict[str, object]]) -> bytes:
    """The smallest manifest the reader accepts: a table per data member, nothing else."""
    doc = {
        "format": "migration-manager",
        "format_version": 1,
        "id": "mig-20260101T000000Z-b0b0b0",
        "created_at": "2026-01-01T00:00:00+00:00",
        "tool_version": "bench",
        "profile": "generic",
        "rules": {
            "system": {"default": "profile", "independent": {}},
            "user": {"default": "schema-only", "independent": {}},
        },
        "source": {
            "database": "bench",
            "server_version": "15",
            "app_version": None,
            "app_settings": {},
            "schema": "public",
            "table_prefix": "",
        },
        "environment": {"variables": [], "referenced_unknown": []},
        "plugins": [],
        "tables": [_table(m) for m in members],
        "units": [{"id": "u1", "tables": ["t"], "label": "t"}] if members else [],
        "warnings": [],
        "members": members,
    }
    return json.dumps(doc).encode()


def build(kind: str, path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        if kind == "sum":
            body = manifest({})
            zf.writestr("manifest.json", body)
            info = zipfile.ZipInfo("manifest.json.sha256")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                out.write(hashlib.sha256(body).hexdigest().encode() + b"\n")
                block = b" " * CHUNK
                for _ in range(GIB // CHUNK):
                    out.write(block)
        elif kind == "manifest":
            body = manifest({})
            padded = body + b" " * (GIB - len(body))
            info = zipfile.ZipInfo("manifest.json")
            info.compress_type = zipfile.ZIP_DEFLATED
            sha = hashlib.sha256()
            with zf.open(info, "w", force_zip64=True) as out:
                for i in range(0, len(padded), CHUNK):
                    out.write(padded[i : i + CHUNK])
                    sha.update(padded[i : i + CHUNK])
            zf.writestr("manifest.json.sha256", sha.hexdigest() + "\n")
        elif kind == "data":
            # a data member whose ZIP entry inflates to 1 GiB while the manifest declares 1 MiB
            info = zipfile.ZipInfo("data/0001.copy.zst")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                block = b"\0" * CHUNK
                for _ in range(GIB // CHUNK):
                    out.write(block)
            body = manifest({"data/0001.copy.zst": {"sha256": "0" * 64, "bytes": CHUNK}})
            zf.writestr("manifest.json", body)
            zf.writestr("manifest.json.sha256", hashlib.sha256(body).hexdigest() + "\n")
        else:
            raise SystemExit(f"unknown kind {kind!r}: sum, manifest or data")


def main() -> None:
    kinds = sys.argv[1:] or ["sum"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            path = Path(tmp) / f"{kind}.zip"
            build(kind, path)
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None
            result = json.loads(line) if line else {"error": done.stderr[-500:]}
            print(json.dumps({"kind": kind, "file_bytes": path.stat().st_size, **result}))


if __name__ == "__main__":
    main()
