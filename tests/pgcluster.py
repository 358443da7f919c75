"""A throwaway PostgreSQL cluster a test may stop, restart and break (``tests.pgcluster``).

The shared server (``MM_PG_URL``) must never be restarted by a test: the fault tests that
restart a target get a cluster of their own, built with the same server binaries
``bin/pg-url`` uses (the ones of the cluster it started, else the machine's newest
``/usr/lib/postgresql/*/bin``). As root, ``initdb``/``pg_ctl`` run as user ``postgres``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.pgtools import REPO


def _server_bindir() -> Path:
    recorded = REPO / ".pg" / "serverbin"
    if recorded.exists():
        path = Path(recorded.read_text().strip())
        if (path / "pg_ctl").exists():
            return path
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    assert found, (
        "no PostgreSQL server binaries: run bin/pg-url once (it starts a cluster of this "
        "checkout) or install postgresql"
    )
    return found[-1].parent


def _as_pg(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else list(cmd)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_pg(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args),
            check=True,
            capture_output=True,
            cwd="/",
            timeout=120,
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, the server comes back."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.data / "server.log"))

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A fresh cluster on a free loopback port (fsync off), stopped and deleted afterwards."""
    bindir = _server_bindir()
    base = Path(tempfile.mkdtemp(prefix="mm-pgfault-"))
    data = base / "data"
    if os.getuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        _as_pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust")
        + ["-E", "UTF8", "--no-locale"],
        check=True,
        capture_output=True,
        cwd="/",
    )
    cluster = Cluster(bindir=bindir, data=data, port=_free_port())
    with open(data / "postgresql.conf", "a") as conf:  # root writes; postgres reads it
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {cluster.port}\n"
            f"unix_socket_directories = '{base}'\nfsync = off\nfull_page_writes = off\n"
        )
    try:
        cluster.pg_ctl("start", "-w", "-l", str(data / "server.log"))
        cluster.wait_ready()
        yield cluster
    finally:
        subprocess.run(
            _as_pg(str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate", "-w"),
            capture_output=True,
            cwd="/",
        )
        shutil.rmtree(base, ignore_errors=True)
