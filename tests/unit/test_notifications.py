"""The notification message and the checks of its settings."""

from __future__ import annotations

import pytest

from migration_manager.errors import ConfigError
from migration_manager.notifications import (
    DEFAULT_EVENTS,
    Notification,
    check_events,
    check_recipients,
    failed_tables,
)
from migration_manager.run_record import RunSummary


def test_message_names_dag_run_target_and_links() -> None:
    note = Notification(
        event="failure",
        dag_id="sync_nightly",
        run_id="scheduled__2026-11-30T02:00:00+00:00",
        target="prod",
        headline="1 unit(s) failed",
        details=("apply_table[<uiSchemas> (overwrite)]: invalid input syntax for type integer",),
        links=(("Run page", "http://af/migrations/runs/mig-1/scheduled__x?a=1&b=2"),),
    )
    assert note.subject == "Migration sync_nightly into prod failed: 1 unit(s) failed"
    text = note.text()
    assert "Run: scheduled__2026-11-30T02:00:00+00:00" in text and "Target: prod" in text
    assert "- apply_table[<uiSchemas> (overwrite)]" in text
    html = note.html()
    assert "&lt;uiSchemas&gt;" in html and "<uiSchemas>" not in html  # escaped
    assert "href='http://af/migrations/runs/mig-1/scheduled__x?a=1&amp;b=2'" in html


def test_long_subjects_and_detail_lists_are_cut() -> None:
    note = Notification("refused", "d", "r", "t", "x" * 500, details=tuple(map(str, range(80))))
    assert len(note.subject) == 200 and note.subject.endswith("...")
    assert "... and 30 more" in note.text()
    with pytest.raises(ValueError, match="unknown event"):
        Notification("exploded", "d", "r", "t", "x")


def test_settings_are_checked() -> None:
    assert check_events(None) == DEFAULT_EVENTS
    assert check_events("failure, success") == ("failure", "success")
    with pytest.raises(ConfigError, match="unknown event\\(s\\) 'oops'; use any of failure"):
        check_events(["failure", "oops"])
    assert check_recipients("a@x.test, b@x.test") == ("a@x.test", "b@x.test")
    assert check_recipients([]) == ()
    with pytest.raises(ConfigError, match="'nobody' is not an e-mail address"):
        check_recipients(["nobody"])


def test_failed_tables_from_a_summary() -> None:
    summary = RunSummary.model_validate(
        {
            "status": "failed",
            "failed_units": [{"id": "u1", "tables": ["a", "b"]}, {"id": "u2", "tables": []}],
        }
    )
    assert failed_tables(summary) == ["a, b", "u2"]
    assert failed_tables(None) == []
