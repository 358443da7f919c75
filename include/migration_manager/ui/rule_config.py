"""What the rules page configures: request bodies, rule sets in the store, the source's tables
and their rules, and engine errors as HTTP answers that carry the message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from migration_manager.config import GROUPS, MigrationRules
from migration_manager.errors import ConfigError, MigrationError, PlanError, TransientError
from migration_manager.plan import AUTO_INCREMENT, NO_PRIMARY_KEY, NOT_ALLOWED, Refusal
from migration_manager.profiles import get_profile
from migration_manager.rule_sets import NamedRuleSet, check_name, list_rule_sets
from migration_manager.ui import connections as conns
from migration_manager.ui.deps import store

if TYPE_CHECKING:  # the engine's preview is imported when the page asks for it
    from migration_manager.preview import TableView

# --- request bodies ----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Config(_Body):
    """A migration's configuration: where from, which profile, which rules (or a saved rule set)."""

    source_conn_id: str = ""
    profile: str = "nocobase"
    rules: dict[str, Any] | None = None
    rule_set: str | None = None


class PreviewBody(Config):
    target_conn_id: str | None = None
    allow_drop: bool = False


class RuleSetBody(_Body):
    source_conn_id: str = Field(min_length=1)
    profile: str = "nocobase"
    rules: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class StartBody(Config):
    action: Literal["create", "sync"]
    target_conn_id: str | None = None
    allow_drop: bool = False
    on_missing_plugins: Literal["ask", "continue", "fail"] = "ask"
    on_missing_env: Literal["ask", "fail"] = "ask"


# --- errors as answers -------------------------------------------------------------------------


def refuse(status: int, message: str, problems: list[str] | None = None) -> HTTPException:
    return HTTPException(status, detail={"message": message, "problems": list(problems or [])})


def message_of(exc: HTTPException) -> str:
    detail = exc.detail
    return str(detail.get("message") if isinstance(detail, dict) else detail)


@contextmanager
def answers() -> Iterator[None]:
    """Engine and connection errors as HTTP answers that carry the message."""
    import psycopg
    import sqlalchemy.exc

    try:
        yield
    except HTTPException:
        raise
    except conns.UnknownConnection as exc:
        raise refuse(404, str(exc)) from None
    except PlanError as exc:
        raise refuse(400, str(exc), exc.problems) from None
    except ConfigError as exc:
        raise refuse(400, str(exc)) from None
    except TransientError as exc:  # a database that does not answer (the password is redacted)
        raise refuse(502, str(exc)) from None
    except MigrationError as exc:
        raise refuse(409, str(exc)) from None
    except (sqlalchemy.exc.OperationalError, psycopg.OperationalError, OSError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise refuse(502, f"Cannot reach the database: {first}") from None


# --- rule sets in the store ------------------------------------------------------------------------


def _rule_set_folder() -> Any:
    from migration_manager.airflow.rule_set_store import FOLDER

    return store() / FOLDER


def saved_rule_sets() -> tuple[list[NamedRuleSet], list[str]]:
    """Every readable rule set in the store, and a message for each unreadable file."""
    return list_rule_sets(_rule_set_folder())


def load_rule_set(name: str) -> NamedRuleSet:
    from migration_manager.airflow.rule_set_store import load_rule_set

    check_name(name)
    if not (_rule_set_folder() / f"{name}.yaml").exists():
        raise refuse(404, f"Rule set {name!r} does not exist in the migration store")
    return load_rule_set(name)


def rule_set_dict(rs: NamedRuleSet) -> dict[str, Any]:
    return {
        "name": rs.name,
        "description": rs.description,
        "profile": rs.profile,
        "source_conn_id": rs.source_conn_id,
        "rules": rs.rules.model_dump(),
        "yaml": rs.to_yaml(),
    }


def rules_of(config: Config) -> tuple[str, str, MigrationRules, str | None]:
    """(source conn id, profile, rules, rule set name) of a request, a saved rule set's when named."""
    name = (config.rule_set or "").strip() or None
    if name:
        if config.rules is not None:
            raise refuse(400, "Give either rules or rule_set, not both")
        saved = load_rule_set(name)
        return (config.source_conn_id or saved.source_conn_id), saved.profile, saved.rules, name
    profile = get_profile(config.profile or "nocobase").name
    return config.source_conn_id, profile, MigrationRules.parse(config.rules), None


def run_conf(
    source_id: str, profile: str, rules: MigrationRules, name: str | None
) -> dict[str, Any]:
    """A started run's conf: the source and the rule set by name, or the page's rules."""
    conf: dict[str, Any] = {"source_conn_id": source_id}
    if name:
        conf["rule_set"] = name
    else:
        conf.update(profile=profile, rules=rules.model_dump())
    return conf


# --- the source's tables ------------------------------------------------------------------------


def refusal_words(why: Refusal) -> str:
    """A refusal in a few words, without what the page shows elsewhere (table, rule, advice)."""
    if why.code == NO_PRIMARY_KEY:
        return "no primary key"
    if why.code == AUTO_INCREMENT:
        return f"auto-increment id ({', '.join(why.columns)} is {why.kind})"
    if why.code == NOT_ALLOWED:
        return f"the app allows only {', '.join(why.allowed)}"
    return why.message


def table_dict(view: TableView) -> dict[str, Any]:
    """A :class:`~migration_manager.preview.TableView` as the page's JSON: each refused choice
    as planning's sentence, and the refusals grouped by reason."""
    d = asdict(view)
    d["choices"] = {rule: (why.message if why else None) for rule, why in view.choices.items()}
    d["companion_of"] = list(view.companion_of)
    grouped: dict[str, list[str]] = {}
    for rule, why in view.choices.items():
        if why:
            grouped.setdefault(refusal_words(why), []).append(rule)
    d["refused"] = [{"rules": rules, "why": why} for why, rules in grouped.items()]
    return d


def inspect(source_conn_id: str, profile: str, rules: MigrationRules) -> tuple[Any, Any]:
    """(environment, SourceView) of a source connection under these rules."""
    from migration_manager.preview import inspect_source

    env = conns.resolve(source_conn_id)
    view = inspect_source(env.dsn, profile=profile, rules=rules, app_env=env.app_env)
    return env, view


def checked(source_conn_id: str, profile: str, rules: MigrationRules) -> tuple[Any, Any]:
    """Like :func:`inspect`, refusing (400, every problem listed) what planning would refuse."""
    env, view = inspect(source_conn_id, profile, rules)
    if view.problems:
        raise PlanError(list(view.problems))
    return env, view


def view_dict(source_conn_id: str, view: Any) -> dict[str, Any]:
    return {
        "source_conn_id": source_conn_id,
        "profile": view.profile,
        "schema": view.schema,
        "tables": [table_dict(t) for t in view.tables],
        "warnings": list(view.warnings),
        "problems": list(view.problems),
    }


def independent_rows(
    view: Any, rules: MigrationRules, profile: str, app_env: dict[str, str]
) -> dict[str, str]:
    """Independent rules by the source's (physical) table names, as the page's rows show them."""
    scope = get_profile(profile).scope(dict(app_env))
    names = {t.name for t in view.tables}
    out: dict[str, str] = {}
    for group in GROUPS:
        for name, rule in rules.group(group).independent.items():
            table = name if name in names else scope.physical(name)
            out[table if table in names else name] = rule
    return out
