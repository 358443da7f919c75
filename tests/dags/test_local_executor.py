"""bin/airflow-local's LocalExecutor: task code imported once, forgotten when it changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_forked_task_keeps_the_preloaded_code_until_a_file_changes() -> None:
    done = _run(
        """
        import os, sys
        from migration_manager.airflow import local_executor as le

        le.preload()
        assert "migration_manager.airflow.wiring" in sys.modules
        assert "migration_manager.execute" in sys.modules
        assert le._loaded, "nothing recorded"
        os.register_at_fork(after_in_child=le.drop_if_changed)

        def child() -> int:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if "migration_manager.execute" in sys.modules else 3)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

        assert child() == 0, "unchanged code was imported again"
        # a file of the project changes after the preload (its recorded mtime no longer matches)
        name = "migration_manager.plan"
        path, mtime = le._loaded[name]
        le._loaded[name] = (path, mtime - 10)
        assert child() == 3, "a changed file kept the old code in the task"
        # the parent (scheduler) is untouched; a child that dropped them imports them again
        assert "migration_manager.execute" in sys.modules
        assert le.drop_if_changed() and "migration_manager.execute" not in sys.modules
        import migration_manager.execute  # noqa: F401
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_a_module_that_fails_to_import_is_left_to_the_task(tmp_path: Path) -> None:
    (tmp_path / "mm_probe_broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    done = _run(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from migration_manager.airflow import local_executor as le

        # a module that does not exist (any more) is skipped, the others are preloaded
        le.preload(("migration_manager.no_such_module", "migration_manager.plan"))
        assert "migration_manager.plan" in sys.modules and le._loaded
        # a module that fails: nothing of the project stays preloaded, the task imports it
        le.preload(("migration_manager.execute", "mm_probe_broken"))
        assert not le._own_modules(), le._own_modules()
        assert not le._loaded
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "Not preloaded for the tasks: migration_manager.no_such_module (no such module)" in said
    assert "Not preloaded for the tasks: mm_probe_broken (broken on purpose)" in said


def test_airflow_local_runs_the_preloading_executor() -> None:
    done = _run(
        """
        import runpy, os
        from airflow._shared.module_loading import import_string
        from airflow.executors.local_executor import LocalExecutor

        local = runpy.run_path("bin/airflow-local", run_name="airflow_local")
        path = local["_executor"]("LocalExecutor")
        assert issubclass(import_string(path), LocalExecutor), path
        assert local["_executor"]("CeleryExecutor") == "CeleryExecutor"
        os.environ["MM_AIRFLOW_PRELOAD"] = "0"
        assert local["_executor"]("LocalExecutor") == "LocalExecutor"
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_printed_stop_command_stops_that_instance(tmp_path: Path) -> None:
    """`make airflow AIRFLOW_ARGS="--home X"` says how to stop X, not the default home; the
    command it prints, run as printed, finds that instance (nothing to stop here)."""
    home = tmp_path / "my home"
    done = _run(
        f"""
        import runpy
        from pathlib import Path
        local = runpy.run_path("bin/airflow-local", run_name="airflow_local")
        print(local["stop_command"](local["default_home"]()))
        print(local["stop_command"](Path({str(home)!r})))
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    default, other = done.stdout.strip().splitlines()[-2:]
    assert default == "make airflow-stop"
    assert other.startswith("make airflow-stop AIRFLOW_ARGS=")
    stopped = subprocess.run(
        other, shell=True, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 0, stopped.stderr
    assert f"nothing to stop ({home / 'airflow-local.json'}" in stopped.stdout + stopped.stderr
