"""Run a whole migration without Airflow (the benchmark, tests): plan, then apply every unit."""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from migration_manager.archive import ArchiveReader
from migration_manager.execute.apply import apply_unit
from migration_manager.execute.prepare import prepare
from migration_manager.execute.results import ExecutionPlan, UnitResult


def execute_migration(
    reader: ArchiveReader, target_dsn: str, *, allow_drop: bool = False, workers: int = 1
) -> tuple[ExecutionPlan, list[UnitResult]]:
    """Prepare and apply every unit (no Airflow): for the benchmark and tests.

    Units share no foreign keys, so ``workers`` of them may be applied at once, each in its own
    transaction on its own connection, as the mapped ``apply_table`` tasks of a DAG run do
    (``workers`` plays the pool ``migration_units``). The first failure stops units not yet
    started; those already running finish; the error is raised after them. Results come in the
    plan's order.
    """
    plan = prepare(reader, target_dsn, allow_drop=allow_drop)
    if workers <= 1 or len(plan.units) <= 1:
        return plan, [
            apply_unit(reader, target_dsn, u, allow_drop=allow_drop, checked=plan.checked)
            for u in plan.units
        ]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mm-unit") as pool:
        futures = [
            pool.submit(
                apply_unit, reader, target_dsn, u, allow_drop=allow_drop, checked=plan.checked
            )
            for u in plan.units
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            f.cancel()
    failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return plan, [f.result() for f in futures]
