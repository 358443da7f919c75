"""The target lock in a DAG run: ``hold_target_lock``, ``target_locked`` and the writers' guard.

``hold_target_lock`` takes the target's advisory lock (``migration_manager.target_lock``) and
keeps its connection open until every writing task of the run has finished; ``target_locked``
(a sensor in reschedule mode, so it holds no worker slot while it waits) opens the gate to the
writing tasks once this run holds the lock. A dry run holds no run-wide lock: its holder returns
at once, and each unit takes the lock for its own (rolled-back) transaction. Each writing task also enters
:func:`target_write_lock`, which checks that its run holds the lock (or takes it for that task
alone when the holder is not running: a table retried on its own, a run in ``dags test``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException

from migration_manager import pg, target_lock
from migration_manager.airflow import task_ids
from migration_manager.airflow.common import engine_errors, is_dry_run
from migration_manager.airflow.connections import environment
from migration_manager.redaction import redact
from migration_manager.run_options import RunOptions

if TYPE_CHECKING:
    from airflow.sdk import Context

FINISHED = {"success", "failed", "skipped", "upstream_failed", "removed"}


def run_ref(context: Context) -> target_lock.DagRunRef:
    return target_lock.DagRunRef(dag_id=context["dag"].dag_id, run_id=str(context["run_id"]))


def lock_timeout(context: Context) -> float:
    return float(RunOptions.of_params(context.get("params")).target_lock_timeout)


def _in_process_run() -> bool:
    """True under ``dag.test()`` / ``airflow dags test``: tasks run one after another in this process."""
    from airflow.sdk.execution_time import task_runner

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return type(comms).__name__ == "InProcessSupervisorComms"


@contextmanager
def target_write_lock(context: Context, dsn: str, log: Any) -> Iterator[None]:
    """Enter before writing to the target; fails (no retry) naming the run that holds it."""
    ref = run_ref(context)

    def waiting(who: target_lock.LockOwner) -> None:
        log.warning("Waiting for the target lock, held by %s", who.describe())

    with (
        engine_errors(),
        target_lock.write_lock(dsn, ref, timeout=lock_timeout(context), on_wait=waiting) as how,
    ):
        log.info(
            "Target lock%s: %s", " (dry run: this unit's transaction)" * is_dry_run(context), how
        )
        yield


class HoldTargetLockOperator(BaseOperator):
    """Hold the target's lock for this run until its writing tasks have finished.

    Waits up to ``params.target_lock_timeout`` seconds for another run to let it go, then fails
    naming that run. Under ``dags test`` (tasks run one at a time in one process) it only
    checks that the lock is free and returns: each writing task then takes it for itself. A dry
    run returns at once without taking it: each unit takes it for its own transaction.

    :param target_conn_id: Airflow connection of the target database (templated)
    :param writers: task ids of the run's writing tasks
    :param check_interval: seconds between checks of the writers' states and the connection
    """

    template_fields: Sequence[str] = ("target_conn_id",)

    def __init__(
        self,
        *,
        target_conn_id: str,
        writers: Sequence[str],
        check_interval: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.target_conn_id = target_conn_id
        self.writers = list(writers)
        self.check_interval = check_interval

    def _writers_done(self, context: Context) -> bool:
        ti = context["ti"]
        run_id = str(context["run_id"])
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=self.writers, run_ids=[run_id]).get(
            run_id, {}
        )
        return bool(states) and all(
            (str(s.value if hasattr(s, "value") else s) if s is not None else None) in FINISHED
            for s in states.values()
        )

    def execute(self, context: Context) -> dict[str, Any]:
        ref = run_ref(context)
        timeout = lock_timeout(context)
        if is_dry_run(context):
            # nothing is committed: no run-wide hold (it would block real runs for the whole
            # dry run, and wait for them before the checks' results are even looked at); each
            # unit takes the lock for its own rolled-back transaction (target_write_lock)
            self.log.info(
                "Dry run: no run-wide target lock; each unit takes it for its own transaction"
            )
            return {"waited_seconds": 0.0, "held_seconds": 0.0, "dry_run": True}

        def waiting(who: target_lock.LockOwner) -> None:
            self.log.warning(
                "The target is locked by %s; waiting up to %.0f s", who.describe(), timeout
            )

        started = time.monotonic()
        waited = 0.0
        in_process = _in_process_run()

        def held() -> None:
            nonlocal waited
            waited = time.monotonic() - started
            self.log.info(
                "Holding the lock of target %s for run %s (waited %.1f s)",
                redact(env.dsn),
                ref,
                waited,
            )
            if in_process:
                self.log.info(
                    "In-process run (dags test): each writing task takes the lock for its own writes"
                )

        def lost(exc: Exception) -> None:
            self.log.warning(
                "Lost the target lock (%s); taking it back (the writing tasks that lost their "
                "sessions too are retried)",
                exc,
            )

        with engine_errors():
            env = environment(self.target_conn_id)
            target_lock.hold_until(
                env.dsn,
                ref,
                done=lambda: in_process or self._writers_done(context),
                timeout=timeout,
                interval=self.check_interval,
                on_wait=waiting,
                on_held=held,
                on_lost=lost,
            )
        if in_process:
            return {"waited_seconds": round(waited, 1), "held_seconds": 0.0}
        seconds = time.monotonic() - started - waited
        self.log.info("Writing tasks finished: released the target lock after %.1f s", seconds)
        return {"waited_seconds": round(waited, 1), "held_seconds": round(seconds, 1)}


class TargetLockedSensor(BaseSensorOperator):
    """Succeeds once this run holds the target's lock; fails when ``hold_target_lock`` failed.

    :param target_conn_id: Airflow connection of the target database (templated)
    :param holder_task_id: the task holding the lock for this run
    """

    template_fields: Sequence[str] = ("target_conn_id",)

    def __init__(
        self,
        *,
        target_conn_id: str,
        holder_task_id: str = task_ids.HOLD_TARGET_LOCK,
        settle_seconds: float = 10.0,
        **kwargs: Any,
    ):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 3)
        kwargs.setdefault("timeout", timedelta(days=1))
        super().__init__(**kwargs)
        self.target_conn_id = target_conn_id
        self.holder_task_id = holder_task_id
        self.settle_seconds = settle_seconds

    def poke(self, context: Context) -> bool:
        # The holder usually takes the lock within a second or two of this task's start: wait
        # for it here (cheap checks) before giving the slot back for a full reschedule cycle.
        # (not under dags test: there the holder cannot run while this task waits)
        settle = 0.0 if _in_process_run() else self.settle_seconds
        deadline = time.monotonic() + settle
        while True:
            last = time.monotonic() >= deadline
            if self._poke_once(context, say=last):
                return True
            if last:
                return False
            time.sleep(0.3)

    def _poke_once(self, context: Context, *, say: bool = True) -> bool:
        ti = context["ti"]
        run_id = str(context["run_id"])
        states = ti.get_task_states(
            dag_id=ti.dag_id, task_ids=[self.holder_task_id], run_ids=[run_id]
        ).get(run_id, {})
        raw = states.get(self.holder_task_id)
        state = str(raw.value if hasattr(raw, "value") else raw) if raw is not None else None
        if state in ("failed", "upstream_failed"):
            raise AirflowFailException(
                f"{self.holder_task_id} failed: this run does not hold the target lock "
                f"(its log names the run holding it); nothing was written"
            )
        if state == "success":  # dags test: each writing task takes the lock itself
            return True
        with engine_errors():
            env = environment(self.target_conn_id)
            with pg.connect(env.dsn, autocommit=True) as conn:
                who = target_lock.owner(conn)
        ref = run_ref(context)
        if who is not None and who.is_holder_of(ref):
            self.log.info("This run holds the target lock (backend pid %d)", who.pid)
            return True
        if say:
            self.log.info(
                "Waiting for %s to take the target lock%s",
                self.holder_task_id,
                f" (held by {who.describe()})" if who else "",
            )
        return False


def guard_target_writes(gate_after: Any, *, target_conn_id: str) -> tuple[Any, Any]:
    """Put the target lock between ``gate_after`` and the tasks that follow it (the writers).

    ``hold_target_lock`` and ``target_locked`` run after ``gate_after``; every task that ran
    directly after ``gate_after`` now also waits for ``target_locked``. The holder keeps the lock
    until every task downstream of ``target_locked`` has finished.
    """
    following = list(gate_after.downstream_list)
    # retried when its worker dies (or its session with the target does and the lock cannot
    # be taken back): the retry takes the lock again, waiting for the writers still running
    # (GATE); a TargetLockedError (another run kept it) is terminal and never retried
    hold = HoldTargetLockOperator(
        task_id=task_ids.HOLD_TARGET_LOCK,
        target_conn_id=target_conn_id,
        writers=[],
        retries=2,
        retry_delay=timedelta(seconds=5),
    )
    locked = TargetLockedSensor(
        task_id=task_ids.TARGET_LOCKED, target_conn_id=target_conn_id, retries=0
    )
    gate_after >> [hold, locked]
    locked >> following
    hold.writers = sorted(locked.get_flat_relative_ids(upstream=False))
    return hold, locked
