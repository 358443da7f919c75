"""Notifications through Airflow's notifier mechanism.

:class:`MigrationNotifier` is a ``BaseNotifier``: ``collect_logs`` carries it as its success and
failure callback (one message per run: failure, rollback, refused destructive plan, success),
and the question tasks (``env_values``, ``plugin_check``, ``destructive_check``) as their
human-in-the-loop ``notifiers`` (the run waits for an answer). What is sent and where comes
from the run's params (a pipeline's settings are its DAG's param defaults):

- ``notify_conn_id``: an Airflow connection of type ``smtp`` (host, port, login, ``from_email``
  in its extra); empty sends nothing;
- ``notify_to``: the recipients;
- ``notify_events``: which of ``failure``, ``rollback``, ``question``, ``refused``, ``success``.

The message itself is built by :mod:`migration_manager.notifications`. Sending never fails or
stops the migration: a message that cannot be sent is logged as a warning.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.bases.notifier import BaseNotifier
from pydantic import BaseModel, ConfigDict

from migration_manager import redaction, store_layout
from migration_manager.airflow import task_ids
from migration_manager.airflow.common import destructive_outcome
from migration_manager.errors import ConfigError
from migration_manager.notifications import (
    FAILURE,
    QUESTION,
    REFUSED,
    ROLLBACK,
    SUCCESS,
    Notification,
    failed_tables,
)
from migration_manager.run_options import RunOptions
from migration_manager.run_record import Outcome, RunRecord, RunSummary
from migration_manager.step_kinds import Rollback

log = logging.getLogger(__name__)

OUTCOME_KEY = "notification"  # the XCom collect_logs pushes for its callbacks
UI_PREFIX = "/migrations"


def base_url() -> str:
    """Where people open Airflow: ``[api] base_url`` (default http://localhost:8080)."""
    from airflow.configuration import conf

    url = str(conf.get("api", "base_url", fallback="") or "").strip().rstrip("/")
    return url if "://" in url else "http://localhost:8080" + url


def run_page_url(migration_id: str | None, run_id: str) -> str | None:
    """The Migrations page of a run (its log in the store), once collect_logs wrote it."""
    if not migration_id:
        return None
    return (
        f"{base_url()}{UI_PREFIX}/runs/{quote(store_layout.safe_component(migration_id), safe='')}"
        f"/{quote(store_layout.safe_component(run_id), safe='')}"
    )


def airflow_run_url(dag_id: str, run_id: str) -> str:
    return f"{base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _target(context: Any) -> str:
    return str((context.get("params") or {}).get("target_conn_id") or "-")


def run_outcome(
    context: Any,
    *,
    record: RunRecord | None,
    summary: RunSummary | None,
    error: str | None = None,
) -> RunOutcome:
    """What this run's notification says, decided in ``collect_logs`` (pushed as an XCom)."""
    ti = context["ti"]
    steps = record.steps if record else []
    failed_steps = [s for s in steps if s.status == "failed" and s.task_id != task_ids.COLLECT_LOGS]
    refused = None
    if any(s.task_id == task_ids.DESTRUCTIVE_CHECK for s in failed_steps):
        refused = destructive_outcome(ti)
    rollback = summary.rollback if summary else None
    migration_id = (record.migration_id if record else None) or (
        summary.migration_id if summary else None
    )
    if refused:
        event = REFUSED
        parts = refused.parts
        how = refused.refused_by or "on_destructive=fail"
        headline = (
            f"the plan is destructive and was refused ({how}); nothing was written: "
            + "; ".join(parts)[:300]
        )
        details: list[str] = parts
    elif summary is not None and summary.status == Outcome.SUCCESS and not error:
        event = SUCCESS
        totals = summary.totals
        headline = (
            f"{len(summary.tables)} tables: +{totals.inserted} ~{totals.updated} "
            f"-{totals.deleted} rows, {totals.ddl} DDL statements"
        )
        details = []
    else:
        event = ROLLBACK if rollback and rollback.status == Rollback.ROLLED_BACK else FAILURE
        # the failed steps with their errors (apply_table's name its tables), else the failed units
        details = [
            f"{s.name or s.task_id}: {_one_line(s.error or 'failed')}" for s in failed_steps
        ] or failed_tables(summary)
        units_only = all(s.task_id == task_ids.APPLY_TABLE for s in failed_steps)
        if event == ROLLBACK:
            failed_units = (len(summary.failed_units) if summary else 0) or len(details)
            headline = (
                f"{failed_units} unit(s) failed; the target was rolled back to backup "
                f"{rollback.backup_id if rollback else None} and verified"
            )
        elif summary and summary.failed_units and units_only:
            headline = f"{len(summary.failed_units)} unit(s) failed"
        else:
            names = ", ".join(s.name or s.task_id for s in failed_steps)
            headline = f"the run stopped at {names or 'its first task'}"
            if error and not details:
                details = [_one_line(error)]
    return RunOutcome(
        event=event,
        headline=headline,
        details=[redaction.redact(str(d)) for d in details],
        migration_id=migration_id,
    )


def _one_line(error: str, limit: int = 600) -> str:
    """An error as one line (a check's message lists its findings on the next lines)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _question_lines(body: str | None) -> list[str]:
    lines = []
    for raw in (body or "").splitlines():
        line = raw.strip().lstrip("-").strip().replace("**", "")
        if line:
            lines.append(line)
    return lines


class RunOutcome(BaseModel):
    """What the run's notification says, decided by ``collect_logs`` (XCom ``notification``);
    the notifier adds where it ran and the links."""

    model_config = ConfigDict(frozen=True)

    event: str
    headline: str = ""
    details: list[str] = []
    migration_id: str | None = None


class MigrationNotifier(BaseNotifier):
    """Tell people about a migration run, through the connection named by ``params.notify_conn_id``.

    :param event: ``question`` for a human-in-the-loop task's notifier; None (or ``success``) for
        ``collect_logs``'s callbacks, which read the outcome ``collect_logs`` pushed.
    """

    template_fields = ()

    def __init__(self, event: str | None = None):
        super().__init__()
        self.event = event

    def message(self, context: Any) -> Notification:
        ti = context["ti"]
        dag_id, run_id = ti.dag_id, ti.run_id
        links = [("Airflow run", airflow_run_url(dag_id, run_id))]
        if self.event == QUESTION:
            task = context["task"]
            return Notification(
                event=QUESTION,
                dag_id=dag_id,
                run_id=run_id,
                target=_target(context),
                headline=f"{task.subject}: task {ti.task_id} waits for an answer under Required actions",
                details=tuple(_question_lines(getattr(task, "body", None))),
                links=(("Answer under Required actions of the run", links[0][1]),),
            )
        pulled = ti.xcom_pull(task_ids=ti.task_id, key=OUTCOME_KEY)
        if pulled:
            outcome = RunOutcome.model_validate(pulled)
        else:
            error = str(context.get("exception") or "the run failed")
            outcome = RunOutcome(event=FAILURE, headline=error.splitlines()[0][:300])
        page = run_page_url(outcome.migration_id, run_id)
        if page:
            links.insert(0, ("Run page", page))
        return Notification(
            event=outcome.event,
            dag_id=dag_id,
            run_id=run_id,
            target=_target(context),
            headline=outcome.headline,
            details=tuple(outcome.details),
            links=tuple(links),
        )

    def notify(self, context: Any) -> None:
        try:
            options = RunOptions.of_params(context.get("params"))
        except ConfigError as exc:
            log.warning("No notification: %s", exc)
            return
        conn_id = (options.notify_conn_id or "").strip()
        if not conn_id:
            return
        try:
            events, recipients = options.notify_events, options.notify_to
            note = self.message(context)
            if note.event not in events:
                log.info(
                    "No notification: %s is not among notify_events (%s)",
                    note.event,
                    ", ".join(events),
                )
                return
            if not recipients:
                raise ConfigError(
                    f"notify_conn_id is {conn_id} but notify_to names no recipient; give e-mail addresses"
                )
            send(conn_id, recipients, note, context)
            log.info(
                "Notified %s about %s (%s) through %s",
                ", ".join(recipients),
                note.event,
                note.headline[:120],
                conn_id,
            )
        except Exception as exc:  # a message that cannot be sent never stops the migration
            log.warning("Could not send the notification through %s: %s", conn_id, exc)


def send(conn_id: str, recipients: tuple[str, ...], note: Notification, context: Any) -> None:
    """Send through the connection's provider notifier (``smtp`` connections: ``SmtpNotifier``)."""
    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type not in ("smtp", "email"):
        raise ConfigError(
            f"notify_conn_id {conn_id} is a {conn.conn_type!r} connection; notifications are sent "
            "through an 'smtp' connection (host, port, login, from_email in its extra)"
        )
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    # notify() directly: the subject and body are final text, not Jinja templates
    SmtpNotifier(
        to=list(recipients),
        from_email=None,  # the connection's extra from_email
        subject=note.subject,
        html_content=note.html(),
        smtp_conn_id=conn_id,
        custom_headers={"X-Migration-Event": note.event, "X-Migration-Run": note.run_id},
    ).notify(context)
