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

import gc
import importlib
import logging
import os
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


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers, and so every task process, start with the task code imported."""

    def start(self) -> None:
        seconds = preload()
        self.log.info(
            "Preloaded the task code for the workers in %.1f s (%d project modules)",
            seconds,
            len(_loaded),
        )
        os.register_at_fork(after_in_child=drop_if_changed)
        super().start()
