"""A running Airflow for end-to-end tests (started with ``bin/airflow-local``) and its REST API.

Everything goes through ``/api/v2`` with a token from ``POST /auth/token``, the way the UI
talks to Airflow, with the project's own client (:mod:`migration_manager.airflow_api`).
Waits poll with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from migration_manager.airflow_api import AirflowApi
from tests.factories import connection_document
from tests.pgtools import REPO, create_database, drop_database, dsn_for

LAUNCHER = REPO / "bin" / "airflow-local"
FINISHED = ("success", "failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Airflow(AirflowApi):
    """The shared REST client (:mod:`migration_manager.airflow_api`), logged in, with waits."""

    def __init__(self, base: str, home: Path, user: str = "admin", password: str = "admin"):
        super().__init__(httpx.Client(base_url=base, timeout=30))
        self.base = base
        self.home = home
        self.log_in(user, password)

    # --- connections ---------------------------------------------------------------------
    def set_connection(self, conn_id: str, dsn: str, extra: dict[str, Any] | None = None) -> None:
        body = {
            "connection_id": conn_id,
            **connection_document(dsn),
            "extra": json.dumps(extra) if extra else None,
        }
        self.upsert("connections", conn_id, body)

    # --- DAGs and runs -------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        return dict(wait_for(f"DAG {dag_id} to be parsed", lambda: self.dag(dag_id), timeout))

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.set_paused(dag_id, False)

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or f"e2e__{uuid.uuid4().hex[:12]}"
        self.trigger_run(dag_id, conf, run_id=run_id)
        return run_id

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.dag_run(dag_id, run_id)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 420) -> str:
        def finished() -> str | None:
            state = str(self.run(dag_id, run_id)["state"])
            return state if state in FINISHED else None

        try:
            return str(wait_for(f"run {dag_id}/{run_id} to finish", finished, timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; task states: {self.states(dag_id, run_id)}") from None

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states and the log tails of failed tasks: the message of a failed assertion."""
        lines = [f"run {dag_id}/{run_id}:"]
        for ti in self.task_instances(dag_id, run_id):
            lines.append(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']}")
            if ti["state"] == "failed":
                log = self.log(dag_id, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
                lines.extend("      " + line for line in log.splitlines()[-15:])
        return "\n".join(lines)

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        out = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            out[key] = ti["state"]
        return out

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return dict(self.call("GET", path))

    def wait_for_state(
        self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 300
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            ti = self.find(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            return ti if ti and ti.get("state") in states else None

        return dict(wait_for(f"{task_id} of {run_id} in {states}", reached, timeout))

    def answer(
        self, dag_id: str, run_id: str, task_id: str, body: dict[str, Any], timeout: float = 300
    ) -> dict[str, Any]:
        """Answer a task's question (``PATCH .../hitlDetails``) once it waits for one, and
        return what it asked.

        The answer goes out only after the scheduler has processed the executor's event for the
        worker that asked (its ``scheduler.log`` line). Airflow 3.3 races otherwise: a task
        answered within the same scheduler loop is re-queued before that event arrives, and the
        late "finished with state success" event then fails the queued task ("task state
        changed externally"). A person answering in the UI is never that quick; a test is.
        """
        ti = self.wait_until_asking(dag_id, run_id, task_id, timeout=timeout)
        path = (
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{ti['map_index']}/hitlDetails"
        )
        asked = dict(self.call("GET", path))
        self.call("PATCH", path, json=body)
        return asked

    def wait_until_asking(
        self, dag_id: str, run_id: str, task_id: str, timeout: float = 300
    ) -> dict[str, Any]:
        """The task instance once it waits for an answer and may be answered (see ``answer``)."""
        ti = self.wait_for_state(dag_id, run_id, task_id, ("awaiting_input",), timeout=timeout)
        key = (
            f"TaskInstanceKey(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', "
            f"try_number={ti['try_number']}, map_index={ti['map_index']})"
        )
        scheduler_log = self.home / "logs" / "scheduler.log"

        def settled() -> bool:
            text = scheduler_log.read_text(errors="replace") if scheduler_log.exists() else ""
            return any(
                "Received executor event" in line and key in line for line in text.splitlines()
            )

        wait_for(f"the executor event of {task_id} (asking) in {scheduler_log}", settled, 120)
        return ti

    def log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> str:
        body = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        content = body.get("content") if isinstance(body, dict) else body
        if isinstance(content, list):
            return "\n".join(
                str(item.get("event", item)) if isinstance(item, dict) else str(item)
                for item in content
            )
        return str(content)


@contextmanager
def running_airflow(
    tmp: Path, *, executor: str = "LocalExecutor", env: dict[str, str] | None = None
) -> Iterator[Airflow]:
    """Start Airflow with ``bin/airflow-local`` (own home, fresh metadata database, free port)."""
    home = tmp / "airflow"
    port = free_port()
    db = create_database("mm_e2e_airflow")
    db_url = dsn_for(db).replace("postgresql://", "postgresql+psycopg://", 1)
    proc_env = {
        **os.environ,
        "MIGRATION_STORE": (tmp / "store").as_uri(),
        "MM_PROGRESS_SECONDS": "5",
        **(env or {}),
    }
    cmd = [sys.executable, str(LAUNCHER), "--home", str(home), "--port", str(port)]
    started = subprocess.run(
        [*cmd[:2], "start", *cmd[2:], "--db-url", db_url, "--no-demo", "--parallelism", "4"]
        + ["--executor", executor],
        env=proc_env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    try:
        assert started.returncode == 0, (
            f"bin/airflow-local start failed:\n{started.stdout}\n{started.stderr}\n"
            + _log_tails(home)
        )
        yield Airflow(f"http://127.0.0.1:{port}", home)
    finally:
        before = instance_processes(home)
        stopped = subprocess.run(
            [*cmd[:2], "stop", *cmd[2:], "--timeout", "5"],
            env=proc_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        drop_database(db)
        assert stopped.returncode == 0, stopped.stderr
        left = [p for p in before if _alive(p)]
        assert not left, f"still running after bin/airflow-local stop: {left}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def instance_processes(home: Path) -> list[psutil.Process]:
    """Every process of the instance: its components (their pid files), everything they started,
    and any other process whose environment says ``AIRFLOW_HOME=<home>`` (one that left their
    tree). A component that sets its process title may overwrite its environment, hence both."""
    found: dict[int, psutil.Process] = {}
    for path in (home / "run").glob("*.pid"):
        try:
            proc = psutil.Process(int(path.read_text().split()[0]))
            found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
        except (ValueError, IndexError, OSError, psutil.Error):
            continue
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AIRFLOW_HOME") == str(home.resolve()):
                found.setdefault(proc.pid, proc)
        except (psutil.Error, OSError):
            continue
    return list(found.values())


def component(home: Path, name: str) -> psutil.Process:
    """The running component ``name`` of bin/airflow-local's instance at ``home`` (its pid file)."""
    return psutil.Process(int((home / "run" / f"{name}.pid").read_text().split()[0]))


def start_daemon(home: Path, name: str, cmd: list[str], env: dict[str, str]) -> psutil.Process:
    """Run ``cmd`` (an Airflow component) as bin/airflow-local runs its components: daemonised
    with its pid file in <home>/run (so ``bin/airflow-local stop`` stops it) and its output in
    <home>/logs/<name>.log. Returns the daemon once its pid file names it."""
    pid_file = home / "run" / f"{name}.pid"
    log, root_log = home / "logs" / f"{name}.log", home / "logs" / f"{name}.root.log"
    flags = ["-D", "--pid", str(pid_file), "--stdout", str(log), "--stderr", str(log)]
    started = subprocess.run(
        [*cmd, *flags, "--log-file", str(root_log)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, f"{name} did not start: {started.stdout}{started.stderr}"

    def running() -> psutil.Process | None:
        try:
            proc = component(home, name)
        except (OSError, ValueError, IndexError, psutil.Error):
            return None
        return proc if _alive(proc) else None

    deadline = time.monotonic() + 60
    while (proc := running()) is None:
        assert time.monotonic() < deadline, f"{name} wrote no pid file {pid_file}"
        time.sleep(0.1)
    return proc


def _log_tails(home: Path) -> str:
    out = []
    for path in sorted((home / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-25:]
        out.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(out)
