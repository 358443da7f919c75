"""What a run tells people: the events a run can notify about and the message for each.

Plain Python (no Airflow): the Airflow notifier (``migration_manager.airflow.notify``) decides
when to send and through which connection; this module says what the message is. A message
names the DAG, the run, the target, what happened (failed tables, the question asked, the
refused destructive parts) and links to the run's page. It never holds a secret: callers give
it table names, counts and questions, which carry names only.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migration_manager.errors import ConfigError

if TYPE_CHECKING:
    from migration_manager.run_record import RunSummary

FAILURE = "failure"
ROLLBACK = "rollback"
QUESTION = "question"
REFUSED = "refused"
SUCCESS = "success"
EVENTS = (FAILURE, ROLLBACK, QUESTION, REFUSED, SUCCESS)
# nobody watches a nightly run: say when it needs someone, not when all went well
DEFAULT_EVENTS = (FAILURE, ROLLBACK, QUESTION, REFUSED)

TITLES = {
    FAILURE: "failed",
    ROLLBACK: "failed and was rolled back",
    QUESTION: "waits for an answer",
    REFUSED: "refused a destructive plan",
    SUCCESS: "succeeded",
}
_DETAILS = 50  # lines listed in a message at most


def check_events(value: Any, *, source: str = "notify_events") -> tuple[str, ...]:
    """The events named by a param or a pipeline option; unknown names are refused by name."""
    if value is None:
        return DEFAULT_EVENTS
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{source}: expected a list of events ({', '.join(EVENTS)})")
    unknown = [str(v) for v in value if v not in EVENTS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown event(s) {', '.join(map(repr, unknown))}; use any of {', '.join(EVENTS)}"
        )
    return tuple(dict.fromkeys(str(v) for v in value))


def check_recipients(value: Any, *, source: str = "notify_to") -> tuple[str, ...]:
    """E-mail addresses (a list, or one string with commas)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: expected a list of e-mail addresses")
    found = tuple(v.strip() for v in value if v.strip())
    bad = [v for v in found if "@" not in v or any(c.isspace() for c in v)]
    if bad:
        raise ConfigError(f"{source}: {', '.join(map(repr, bad))} is not an e-mail address")
    return found


@dataclass(frozen=True)
class Notification:
    """One message about one run."""

    event: str
    dag_id: str
    run_id: str
    target: str
    headline: str  # what happened, one sentence
    details: tuple[str, ...] = ()  # failed tables, refused parts, the question's lines
    links: tuple[tuple[str, str], ...] = field(default=())  # (label, URL)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown event {self.event!r}")

    @property
    def subject(self) -> str:
        text = f"Migration {self.dag_id} into {self.target} {TITLES[self.event]}: {self.headline}"
        text = " ".join(text.split())
        return text if len(text) <= 200 else text[:197] + "..."

    def _details(self) -> list[str]:
        shown = list(self.details[:_DETAILS])
        if len(self.details) > _DETAILS:
            shown.append(f"... and {len(self.details) - _DETAILS} more")
        return shown

    def text(self) -> str:
        lines = [
            f"DAG: {self.dag_id}",
            f"Run: {self.run_id}",
            f"Target: {self.target}",
            f"What happened: {self.headline}",
        ]
        if self.details:
            lines += ["", *(f"- {d}" for d in self._details())]
        if self.links:
            lines += ["", *(f"{label}: {url}" for label, url in self.links)]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>"
            for k, v in (("DAG", self.dag_id), ("Run", self.run_id), ("Target", self.target))
        )
        parts = [f"<p><b>{e(self.headline)}</b></p>", f"<table>{rows}</table>"]
        if self.details:
            parts.append("<ul>" + "".join(f"<li>{e(d)}</li>" for d in self._details()) + "</ul>")
        if self.links:
            parts.append(
                "<p>"
                + "<br>".join(
                    f"<a href='{e(url, quote=True)}'>{e(label)}</a>" for label, url in self.links
                )
                + "</p>"
            )
        return "\n".join(parts)


def failed_tables(summary: RunSummary | None) -> list[str]:
    """One line per failed unit of a run summary: its tables (its id when it has none)."""
    return [", ".join(u.tables) or u.id for u in summary.failed_units] if summary else []


def lines_of(items: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(i) for i in items if str(i).strip())
