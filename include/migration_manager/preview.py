"""What a migration would do, before it runs: the source's tables with their rules, and a dry run.

The rules page shows these. ``inspect_source`` uses the same classification and rule resolution
as ``create_migration`` (without writing a file); ``preview`` runs the same code as a real run —
a migration file, ``prepare`` and ``apply_unit`` — with every unit's transaction rolled back.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from migration_manager import pg
from migration_manager.archive import open_archive
from migration_manager.config import MigrationRules
from migration_manager.create import create_migration
from migration_manager.errors import ConfigError
from migration_manager.execute import TableResult, apply_unit, prepare
from migration_manager.plan import Refusal, evaluate, rule_choices
from migration_manager.profiles import get_profile
from migration_manager.schema import list_tables, reflect_tables, row_counts
from migration_manager.target_lock import DagRunRef, TargetLockedError, hold_run_lock


@dataclass(frozen=True)
class TableView:
    name: str
    group: str
    key_kind: str
    estimated_rows: int | None  # None: unknown (never analysed, too large to count)
    rule: str
    rule_source: str
    choices: dict[str, Refusal | None]  # rule -> why it is refused (None: allowed)
    companion_of: tuple[str, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class SourceView:
    profile: str
    schema: str
    tables: tuple[TableView, ...]
    warnings: tuple[str, ...]
    problems: tuple[str, ...]


def inspect_source(
    source_dsn: str,
    *,
    profile: str | None = "nocobase",
    rules: MigrationRules | Mapping[str, Any] | str | None = None,
    app_env: Mapping[str, str] | None = None,
) -> SourceView:
    """The source's tables in their groups, each with its key kind, row estimate and rule."""
    prof = get_profile(profile)
    ruleset = rules if isinstance(rules, MigrationRules) else MigrationRules.parse(rules)
    scope = prof.scope(dict(app_env or {}))
    with pg.sa_connection(source_dsn) as conn:
        if not conn.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": scope.schema}
        ).first():
            raise ConfigError(f"The source database has no schema {scope.schema!r} (DB_SCHEMA)")
        tables = [t for t in list_tables(conn, scope.schema) if scope.contains(t)]
        structures = reflect_tables(conn, scope.schema, tables)
        classes = prof.classify(conn, scope, tables)
        estimates = row_counts(conn, scope.schema)
        conn.rollback()
    plans, warnings, problems = evaluate(structures, classes, ruleset, scope)
    views = []
    for p in plans:
        problem = next((r.message for r in problems if r.table == p.name), None)
        views.append(
            TableView(
                name=p.name,
                group=p.group,
                key_kind=p.key_kind,
                estimated_rows=estimates.get(p.name),
                rule=p.rule,
                rule_source=p.rule_source,
                choices=rule_choices(p.name, structures[p.name], classes[p.name]),
                companion_of=p.companion_of,
                problem=problem,
            )
        )
    messages = tuple(r.message for r in problems)
    return SourceView(prof.name, scope.schema, tuple(views), tuple(warnings), messages)


def preview(
    source_dsn: str,
    target_dsn: str,
    *,
    profile: str | None = "nocobase",
    rules: MigrationRules | Mapping[str, Any] | str | None = None,
    app_env: Mapping[str, str] | None = None,
    allow_drop: bool = False,
) -> list[TableResult]:
    """Per table what a run would do to the target (created, columns, rows), computed by a rolled-back run."""
    with tempfile.TemporaryDirectory(prefix="mm-preview-") as tmp:
        path = Path(tmp) / "preview.zip"
        with path.open("wb") as fh:
            create_migration(source_dsn, fh, profile=profile, rules=rules, app_env=app_env)
        with open_archive(path) as reader, _target_lock(target_dsn):
            plan = prepare(reader, target_dsn, allow_drop=allow_drop)
            results = list(plan.tables)
            for unit in plan.units:
                results.extend(
                    apply_unit(reader, target_dsn, unit, allow_drop=allow_drop, dry_run=True).tables
                )
    return sorted(results, key=lambda r: r.table)


@contextmanager
def _target_lock(target_dsn: str) -> Iterator[None]:
    """The target's run lock for the dry run, not waited for: a preview's rolled-back writes
    take the same row and table locks as a run's, so it never runs beside a migration run (and
    a run starting meanwhile waits for it, as for another run)."""
    ref = DagRunRef("preview", uuid.uuid4().hex[:12])
    try:
        with hold_run_lock(target_dsn, ref, timeout=0, poll=0):
            yield
    except TargetLockedError as exc:
        raise TargetLockedError(
            f"The target ({exc.target}) is locked by {exc.holder}. A preview does a run's work "
            "and rolls it back, so it waits for no migration: preview again when that run has "
            "finished.",
            target=exc.target,
            holder=exc.holder,
        ) from exc
