"""``destructive_check``: after the plan, before anything is written, stop or ask about a destructive plan.

A plan is destructive when an ``overwrite`` table would lose more than ``max_delete_ratio`` of
its rows, when something would be dropped (``allow_drop``), or when rows edited in the target
since the last migration would be replaced (``plan``'s ``changed_in_prod``); see
:mod:`migration_manager.destructive`. ``on_destructive``: ``ask`` waits for **Approve** /
**Reject** under Required actions (an Airflow ``ApprovalOperator``), ``fail`` stops the run with
the destructive parts, ``continue`` goes on (the parts are in the log).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import AirflowFailException

from migration_manager.airflow import task_ids
from migration_manager.airflow.common import (
    engine_errors,
    is_dry_run,
    migration_archive,
    responder,
    unanswered,
)
from migration_manager.airflow.connections import environment
from migration_manager.airflow.notify import airflow_run_url
from migration_manager.destructive import (
    ASK,
    CONTINUE,
    DestructiveOutcome,
    DestructivePlan,
    assess,
)
from migration_manager.run_options import RunOptions

if TYPE_CHECKING:
    from airflow.sdk import Context

KEY = task_ids.DESTRUCTIVE_KEY  # XCom: the destructive parts (also when the task fails)


class DestructiveCheckOperator(ApprovalOperator):
    """Find the destructive parts of the plan; ask, fail or continue (``params.on_destructive``).

    :param migration_file: URI or store file name of the migration file (templated)
    :param target_conn_id: Airflow connection of the target database (templated)
    :param report: ``plan``'s report (XCom form of ``plan_report.PlanReport``)
    :return: the destructive parts, the decision and who made it (``destructive.DestructiveOutcome``)
    """

    template_fields: Sequence[str] = ("migration_file", "target_conn_id", "report")

    def __init__(
        self, *, migration_file: str, target_conn_id: str, report: Any = None, **kwargs: Any
    ):
        super().__init__(subject="Destructive migration plan", **kwargs)
        self.migration_file = migration_file
        self.target_conn_id = target_conn_id
        self.report = report

    def _assess(self, context: Context) -> DestructivePlan:
        from migration_manager.plan_report import PlanReport

        report = PlanReport.pulled(self.report)
        options = RunOptions.of_params(context["params"])
        with engine_errors():
            env = environment(self.target_conn_id)
            with migration_archive(self.migration_file) as reader:
                return assess(
                    reader,
                    env.dsn,
                    list(report.pending) if report else [],
                    max_delete_ratio=options.max_delete_ratio,
                    changed=[c.table for c in report.changed_in_prod] if report else [],
                )

    def execute(self, context: Context) -> Any:
        with engine_errors():
            mode: str = RunOptions.of_params(context["params"]).on_destructive
        found = self._assess(context)
        for loss in found.losses:
            self.log.info("%s", loss.describe())
        for edit in found.prod_edits:
            self.log.warning("%s", edit.describe())
        for ref in found.dangling:
            self.log.warning("%s", ref.describe())
        if found.unchecked:
            self.log.warning(
                "Not counted, locked by another session past MM_PLAN_LOCK_TIMEOUT (their units "
                "wait for the lock and apply them as planned): %s",
                ", ".join(found.unchecked),
            )
        result = DestructiveOutcome(**dict(found), mode=mode)
        if not found.destructive:
            self.log.info(
                "Not destructive: no table loses more than %.0f%% of its rows, nothing is dropped, "
                "no edit made in the target since the last migration would be replaced, no "
                "target row is left pointing at a removed row",
                found.max_delete_ratio * 100,
            )
            return result.model_copy(update={"decision": "not destructive"}).model_dump(mode="json")
        parts = "; ".join(found.parts)
        context["ti"].xcom_push(key=KEY, value=result.model_dump(mode="json"))
        if is_dry_run(context):
            self.log.warning(
                "Dry run of a destructive plan (not asked, nothing is committed): %s", parts
            )
            return result.model_copy(update={"decision": "dry run: not asked"}).model_dump(
                mode="json"
            )
        if mode == CONTINUE:
            self.log.warning("Destructive plan, going on (on_destructive=continue): %s", parts)
            return result.model_copy(
                update={"decision": "continue (on_destructive=continue)"}
            ).model_dump(mode="json")
        if mode != ASK:
            refused = result.model_copy(
                update={"decision": "refused", "refused_by": "on_destructive=fail"}
            )
            context["ti"].xcom_push(key=KEY, value=refused.model_dump(mode="json"))
            raise AirflowFailException(
                f"The plan is destructive: {parts}. Nothing was written. Check the migration file and "
                "the rules; to apply it anyway, run again with on_destructive 'ask' (approve it) or "
                f"'continue', or a max_delete_ratio above {found.max_delete_ratio}"
            )
        ti = context["ti"]
        self.body = (
            "This migration would destroy data in the target (edits made there since the last "
            f"migration replaced, more than {found.max_delete_ratio:.0%} of a table's rows deleted, "
            "or something dropped):\n\n"
            + "\n".join(f"- {p}" for p in found.parts)
            + f"\n\nApprove to apply it, Reject to stop before anything is written. "
            f"[The run]({airflow_run_url(ti.dag_id, ti.run_id)})"
        )
        self.log.warning("Destructive plan, waiting for Approve / Reject: %s", parts)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" in event:
            unanswered(self, event, "the destructive plan")
        # HITLOperator's: validates the answer; ApprovalOperator's own would skip downstream on
        # Reject, while a rejected plan must fail the run (and be logged and notified as refused)
        answer = HITLOperator.execute_complete(self, context, event)
        user = responder(event)
        # this task's own XCom, pushed by the try that asked
        asked = context["ti"].xcom_pull(task_ids=self.task_id, key=KEY)
        if asked and asked.get("parts"):
            found = DestructiveOutcome.model_validate(asked)
        else:  # recomputed when the asking try's XCom is gone
            found = DestructiveOutcome(**dict(self._assess(context)), mode=ASK)
        if self.REJECT in (answer.get("chosen_options") or []):
            rejected = found.model_copy(
                update={"decision": "rejected", "refused_by": f"rejected by {user or 'a user'}"}
            )
            context["ti"].xcom_push(key=KEY, value=rejected.model_dump(mode="json"))
            raise AirflowFailException(
                f"Rejected by {user or 'a user'}: the plan is destructive "
                f"({'; '.join(found.parts)}); nothing was written"
            )
        self.log.info("%s approved the destructive plan", user or "A user")
        return found.model_copy(update={"decision": "approved", "decided_by": user}).model_dump(
            mode="json"
        )
