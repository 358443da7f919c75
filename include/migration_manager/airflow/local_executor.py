"""``bin/airflow-local``'s executor: Airflow's LocalExecutor, with the task code imported once.

Every task is a new process forked from a LocalExecutor worker (itself forked from the
scheduler), which then parses the task's DAG file: importing this project's DAG modules and what
they pull in (Airflow's task decorators and HITL operators, psycopg, SQLAlchemy, zstandard...)
took 0.2-0.9 s of every task here, longer than most tasks' own work. This executor imports those
modules in the scheduler before it forks its workers, so every task process starts with them
loaded and the DAG file's parse is a few tens of milliseconds.

Code changed after the scheduler started still runs: in every process forked from the
scheduler (workers, tasks) a fork hook compares the preloaded ``migration_manager`` modules'
files with what was imported; when one changed, all of them are dropped from ``sys.modules``, so
that task imports the current code (as without this executor). Third-party packages are not
re-checked: restart the scheduler after upgrading them (as for any Airflow component).

Configured by ``bin/airflow-local`` as ``AIRFLOW__CORE__EXECUTOR=`` this class's path
(``MM_AIRFLOW_PRELOAD=0``: plain ``LocalExecutor``).
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import signal
import sys
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

PACKAGE = "migration_manager"
# what a task process imports: the DAG files' building blocks and, inside execute(), the engine
PRELOAD = (
    "migration_manager.airflow.wiring",
    "migration_manager.airflow.pipeline_dags",
    "migration_manager.create",
    "migration_manager.execute",
    "migration_manager.plan",
    "migration_manager.backup",
    "airflow.sdk.execution_time.task_runner",
)

_loaded: dict[str, tuple[str, float]] = {}  # module name -> (file, mtime when imported)


def _own_modules() -> list[str]:
    return [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _record() -> None:
    _loaded.clear()
    for name in _own_modules():
        path = getattr(sys.modules[name], "__file__", None)
        if path:
            _loaded[name] = (path, _mtime(path) or 0.0)


def drop_if_changed() -> bool:
    """In a forked process: forget this project's preloaded modules when a file changed since."""
    if not _loaded:
        return False
    if all(_mtime(path) == mtime for path, mtime in _loaded.values()):
        return False
    for name in _own_modules():
        del sys.modules[name]
    _loaded.clear()
    return True


def preload(modules: tuple[str, ...] = PRELOAD) -> float:
    """Import ``modules`` into this process; returns the seconds it took. Never raises: a module
    that fails to import is left to the task, which then reports the error as before."""
    started = time.monotonic()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            if isinstance(exc, ModuleNotFoundError) and exc.name == name:
                log.warning("Not preloaded for the tasks: %s (no such module)", name)
                continue
            log.warning("Not preloaded for the tasks: %s (%s)", name, exc)
            for own in _own_modules():  # a half-imported module must not reach the tasks
                del sys.modules[own]
            break
    _record()
    gc.collect()
    return time.monotonic() - started


_PR_SET_PDEATHSIG = 1  # prctl(2), Linux
_forked_by: list[int] = [0]  # the pid that forks, noted just before each fork


def _note_parent() -> None:
    _forked_by[0] = os.getpid()


def die_with_parent() -> None:
    """In a forked process: be killed when the process that forked it dies.

    A LocalExecutor worker is forked by the scheduler, often while the scheduler is inside a
    metadata-database transaction, and keeps the inherited socket of that connection open
    (Airflow disposes the pool in the child with ``close=False``). When the scheduler was killed,
    an orphaned worker kept that transaction and its row locks open for good: the restarted
    scheduler never scheduled the run's next tasks (found by
    ``tests/e2e/test_faults_airflow.py``). Dying with the parent closes the socket; the tasks
    such a worker supervised stop heartbeating, and Airflow fails and retries them.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers outlive a killed scheduler
        return
    if _forked_by[0] and os.getppid() != _forked_by[0]:
        os._exit(1)  # the parent died between the fork and the prctl


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers, and so every task process, start with the task code imported,
    and die with the scheduler (:func:`die_with_parent`)."""

    def start(self) -> None:
        seconds = preload()
        self.log.info(
            "Preloaded the task code for the workers in %.1f s (%d project modules)",
            seconds,
            len(_loaded),
        )
        os.register_at_fork(after_in_child=drop_if_changed)
        os.register_at_fork(before=_note_parent, after_in_child=die_with_parent)
        super().start()
