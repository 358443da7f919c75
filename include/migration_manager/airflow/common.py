"""What the adapter's operators share: flags from params, engine errors as task failures, the
verified migration file, and answers to human-in-the-loop questions."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from migration_manager.airflow import task_ids
from migration_manager.errors import MigrationError
from migration_manager.run_options import RunOptions

# The engine (SQLAlchemy, Alembic, psycopg, zstd) is imported inside the functions: parsing a
# DAG file imports none of it.
if TYPE_CHECKING:
    from airflow.providers.standard.operators.hitl import HITLOperator

    from migration_manager.archive import ArchiveReader
    from migration_manager.destructive import DestructiveOutcome
    from migration_manager.manifest import Manifest
    from migration_manager.plan_report import PlanReport
    from migration_manager.step_outcomes import RollbackOutcome

log = logging.getLogger(__name__)

# what an operator returns or pushes: the JSON-able form of an xcom_models model, or a small
# record of its outcome


def as_bool(value: Any) -> bool:
    """A flag from a param or a rendered template (``"True"``, ``"1"``, ``True``, ...)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def is_dry_run(context: Any) -> bool:
    """The run's ``dry_run`` param."""
    return RunOptions.of_params(context.get("params")).dry_run


@contextmanager
def engine_errors() -> Iterator[None]:
    """Terminal engine errors fail the task without retries; transient ones are retried."""
    try:
        yield
    except MigrationError as exc:
        if exc.terminal:
            raise AirflowFailException(str(exc)) from exc
        raise


def allow_unsigned() -> bool:
    """The running task's ``allow_unsigned`` param (False outside a task or when absent)."""
    from airflow.sdk import get_current_context

    try:
        params = get_current_context()["params"]
    except Exception:  # not inside a task: nothing allows unsigned files
        return False
    return RunOptions.of_params(params).allow_unsigned


@contextmanager
def migration_archive(ref: str) -> Iterator[ArchiveReader]:
    """The migration file, verified: limits, manifest model and signature (trusted keys).

    A file not signed by a trusted key is refused unless the run's ``allow_unsigned`` param is
    set; every task that opens the file checks again (the store may change between tasks).
    """
    from migration_manager.airflow.signing import task_trust
    from migration_manager.airflow.store import as_local, migration_file_path
    from migration_manager.archive import open_archive

    path = migration_file_path(ref)
    trust = task_trust(allow_unsigned())
    with open_archive(as_local(path), name=str(path), trust=trust) as reader:
        if reader.signature.status != "verified":
            log.warning(
                "Migration file %s is %s; running it because allow_unsigned is set",
                path,
                reader.signature.label,
            )
        yield reader


def migration_manifest(ref: str) -> Manifest:
    """The verified migration file's manifest."""
    with migration_archive(ref) as reader:
        return reader.manifest


def unanswered(task: HITLOperator, event: Mapping[str, Any], asked: str) -> None:
    """Stop with a message a user can act on when the question was not answered in time."""
    if event.get("error_type") == "timeout":
        raise AirflowFailException(
            f"Nobody answered the question about {asked} within {task.response_timeout}; the "
            "migration stopped before writing anything. Trigger the run again and answer under "
            "Required actions (or set MM_ANSWER_TIMEOUT_HOURS for a longer wait)"
        )
    task.process_trigger_event_error(dict(event))


def responder(event: Mapping[str, Any]) -> str | None:
    """Who answered a human-in-the-loop question (name, else id)."""
    user = event.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id")) if user else None


# Tasks downstream take these XComs as arguments (wiring); the readers below are the ones that
# run whether or not the task that pushes them ran, or before it (a cleared unit, collect_logs,
# the notifier): they read the XCom by the pushing task's id, defined once in task_ids.


def plan_report_xcom(ti: Any) -> PlanReport | None:
    """``plan``'s report, None when it pushed none (it failed, or never ran)."""
    from migration_manager.plan_report import PlanReport

    return PlanReport.pulled(ti.xcom_pull(task_ids=task_ids.PLAN, key=task_ids.REPORT_KEY))


def rollback_outcome(ti: Any) -> RollbackOutcome | None:
    """``rollback``'s outcome, also when restoring failed; None when it did not run."""
    from migration_manager.step_outcomes import RollbackOutcome, outcome_as

    pushed = ti.xcom_pull(task_ids=task_ids.ROLLBACK, key=task_ids.ROLLBACK_KEY)
    return outcome_as(RollbackOutcome, pushed) if pushed else None


def destructive_outcome(ti: Any) -> DestructiveOutcome | None:
    """``destructive_check``'s outcome, also when it refused; None when it pushed none."""
    from migration_manager.destructive import DestructiveOutcome

    pushed = ti.xcom_pull(task_ids=task_ids.DESTRUCTIVE_CHECK, key=task_ids.DESTRUCTIVE_KEY)
    return DestructiveOutcome.model_validate(pushed) if pushed else None
