"""PostgreSQL's client programs (``pg_dump``, ``pg_restore``, ``psql``): finding them, their versions, their connection.

Tools come from ``MM_PG_BINDIR`` when set, else ``PATH``, and must be at least the server's
major version. Connection details reach them through ``PG*`` environment variables
(:func:`pg_env`), never the command line.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from psycopg.conninfo import conninfo_to_dict

from migration_manager.errors import BackupError
from migration_manager.redaction import redact

log = logging.getLogger(__name__)

_ENV_OF = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "requirepeer": "PGREQUIREPEER",
}


@dataclass(frozen=True)
class Tool:
    """A PostgreSQL client program and its version."""

    name: str
    path: str
    version: str

    @property
    def major(self) -> int:
        return major_of(self.version)


def major_of(version: str) -> int:
    """``15.20 (Debian ...)`` -> 15; ``9.6.24`` -> 9."""
    m = re.match(r"\s*(\d+)", version or "")
    if not m:
        raise BackupError(f"Cannot read a PostgreSQL version from {version!r}")
    return int(m.group(1))


def install_hint(name: str, major: int | None) -> str:
    v = str(major) if major else "<server major>"
    return (
        f"install the PostgreSQL {v} client tools (Debian/Ubuntu: apt-get install postgresql-client-{v}; "
        f"RHEL/Fedora: dnf install postgresql{v}) or set MM_PG_BINDIR to the directory that holds "
        f"their {name}"
    )


def _tool_version(path: str) -> str:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackupError(f"{path} --version failed ({exc}); is it a PostgreSQL program?") from exc
    m = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", out) or re.search(r"(\d+(?:\.\d+)+)", out)
    if not m:
        raise BackupError(f"{path} --version printed no version ({out.strip()!r})")
    return m.group(1)


def find_tool(name: str, *, min_major: int | None = None) -> Tool:
    """``name`` from ``MM_PG_BINDIR`` (preferred) or ``PATH``, at least ``min_major``."""
    candidates: list[str] = []
    bindir = os.environ.get("MM_PG_BINDIR", "").strip()
    if bindir:
        p = Path(bindir, name)
        if p.is_file() and os.access(p, os.X_OK):
            candidates.append(str(p))
    found = shutil.which(name)
    if found and found not in candidates:
        candidates.append(found)
    if not candidates:
        where = f"MM_PG_BINDIR={bindir} nor PATH" if bindir else "PATH"
        raise BackupError(f"{name} was not found (in {where}): {install_hint(name, min_major)}")
    seen: list[str] = []
    for path in candidates:
        tool = Tool(name, path, _tool_version(path))
        if min_major is None or tool.major >= min_major:
            return tool
        seen.append(f"{path} is {tool.version}")
    raise BackupError(
        f"{name} is older than the server's major version {min_major} ({'; '.join(seen)}) and "
        f"cannot dump or restore it faithfully: {install_hint(name, min_major)}"
    )


def pg_env(dsn: str, **overrides: str) -> dict[str, str]:
    """The process environment plus the DSN's parts as ``PG*`` variables (no secrets on argv)."""
    env = dict(os.environ)
    for key, value in {**conninfo_to_dict(dsn), **overrides}.items():
        var = _ENV_OF.get(key)
        if var is None:
            log.warning("Connection option %s has no PG* environment variable; ignored", key)
        elif value is not None and str(value) != "":
            env[var] = str(value)
    return env


def stderr_tail(fh: IO[bytes], limit: int = 4000) -> str:
    """The end of a tool's captured stderr, credentials removed (for an error message)."""
    fh.seek(0)
    text = fh.read().decode("utf-8", "replace").strip()
    return redact(text[-limit:]) or "(no message)"
