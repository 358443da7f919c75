"""The target app's connection settings and how the run log renders the version check and the restart."""

from __future__ import annotations

import pytest

from migration_manager import run_log_text, step_outcomes
from migration_manager.app_control import AppEndpoint
from migration_manager.errors import ConfigError
from migration_manager.step_kinds import StepKind


def test_app_endpoint_from_the_connection_extra() -> None:
    assert AppEndpoint.from_extra({}) is None
    assert AppEndpoint.from_extra({"app_url": "  "}) is None
    app = AppEndpoint.from_extra(
        {"app_url": "http://prod:13000/", "app_account": "admin@x", "app_password": "pw"}
    )
    assert app == AppEndpoint("http://prod:13000", None, "admin@x", "pw", "basic")
    app.validate()
    token = AppEndpoint.from_extra({"app_url": "https://prod", "app_api_token": "t0k"})
    assert token is not None and token.token == "t0k"
    token.validate()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"app_url": "prod:13000", "app_api_token": "t"}, "must start with http"),
        ({"app_url": "http://prod"}, "add app_api_token"),
        ({"app_url": "http://prod", "app_account": "a"}, "app_account and app_password"),
    ],
)
def test_app_endpoint_problems_are_named(extra: dict[str, str], message: str) -> None:
    app = AppEndpoint.from_extra(extra)
    assert app is not None
    with pytest.raises(ConfigError, match=message):
        app.validate("prod_conn")


def test_the_run_log_says_what_happened_to_the_app() -> None:
    restarted = step_outcomes.outcome_of(
        StepKind.APP_RESTART,
        {
            "status": "restarted",
            "after": "migration",
            "url": "http://prod:13000",
            "went_down": True,
            "seconds": 4.5,
            "health": "ok",
            "password": "never kept",
        },
    )
    assert restarted is not None and "password" not in restarted.model_dump_json()
    assert restarted.describe() == (
        "restarted http://prod:13000 after the migration; healthy after 4.5 s"
    )
    needed = step_outcomes.outcome_of(
        StepKind.APP_RESTART,
        {"status": "restart needed", "after": "rollback", "message": "Restart it"},
    )
    assert needed is not None and needed.describe() == "RESTART THE TARGET APP: Restart it"
    check = step_outcomes.outcome_of(
        StepKind.ENV_CHECK,
        {
            "settings": {},
            "missing_env": [],
            "versions": {
                "source_version": "2.2.15",
                "target_version": "2.2.14",
                "differences": [{"name": "application", "source": "2.2.15", "target": "2.2.14"}],
                "allowed": True,
            },
        },
    )
    assert check is not None and check.describe() == (
        "settings match; versions differ (application: source 2.2.15, target 2.2.14), allowed"
    )
    lines = run_log_text.check_lines({"env_check": check, "app_restart": needed})
    assert (
        "  Versions          differ, allowed by allow_version_mismatch: application: source 2.2.15, target 2.2.14"
        in lines
    )
    assert "  App restart       RESTART THE TARGET APP: Restart it" in lines
