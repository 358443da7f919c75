"""Destructive plans: a table that would lose more than ``max_delete_ratio`` of its rows, or a drop.

Computed right after the plan, before anything is written. For each ``overwrite`` table with
data whose target table has rows, the source's rows are staged in a temporary table (binary
``COPY`` from the migration file, as the apply does) and the target rows whose key the source
lacks are counted with one anti-join; a table without a key loses all its rows when its rows
differ. Everything happens in one transaction that is rolled back. When the target's columns
cannot take the source's rows as they are (a column the target lacks, a changed type), the
count falls back to ``target rows - source rows`` (a lower bound) and says so.

Drops come from the plan: with ``allow_drop`` the structure changes it lists include
``drop column``, ``drop index`` and ``drop constraint``.

Prod edits: for each table the plan found changed in the target since the last migration into it
(:func:`migration_manager.prod_edits.changed_since`), the target rows not identical to a source
row are counted the same way (staged source rows, one anti-join), with up to 20 of their keys:
``overwrite`` replaces or deletes them, ``upsert`` updates those whose key the source has.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, computed_field

from migration_manager import pg, references, row_writes
from migration_manager.archive import ArchiveReader
from migration_manager.config import OVERWRITE, UPSERT
from migration_manager.manifest import Table
from migration_manager.references import (
    DanglingReference,
    match_natural_keys,
    table_exists,
)
from migration_manager.run_options import DEFAULT_MAX_DELETE_RATIO, check_ratio
from migration_manager.step_outcomes import Difference

log = logging.getLogger(__name__)

ASK, FAIL, CONTINUE = "ask", "fail", "continue"
ON_DESTRUCTIVE = (ASK, FAIL, CONTINUE)


class TableLoss(BaseModel):
    """Rows a table of the target would lose under ``overwrite``."""

    model_config = ConfigDict(frozen=True)

    table: str
    target_rows: int
    deleted: int
    exact: bool = True  # False: a lower bound (target rows - source rows)

    @property
    def ratio(self) -> float:
        return self.deleted / self.target_rows if self.target_rows else 0.0

    def describe(self) -> str:
        how = "" if self.exact else " at least"
        return (
            f"{self.table}: overwrite would delete{how} {self.deleted} of its {self.target_rows} "
            f"rows ({self.ratio:.0%})"
        )


class ProdEdit(BaseModel):
    """A table changed in the target since the last migration whose rows the rule would replace.

    ``rows``: target rows not identical to a source row that the rule overwrites (None: the
    target's columns cannot take the source's rows as they are, so they were not counted).
    """

    model_config = ConfigDict(frozen=True)

    table: str
    rule: str
    rows: int | None
    keys: tuple[str, ...] = ()

    def describe(self) -> str:
        how = "replaced" if self.rule == OVERWRITE else "updated"
        count = (
            f"{self.rows} row{'s' if self.rows != 1 else ''} of {self.table} would be {how}"
            if self.rows is not None
            else f"{self.table}'s rows would be {how} (not counted: its columns differ from the source's)"
        )
        keys = f" (keys {', '.join(self.keys)})" if self.keys else ""
        return f"changed in prod since the last migration: {count}{keys}"


class DestructivePlan(BaseModel):
    """What of the target a run would destroy; XCom carries it as ``model_dump(mode="json")``
    (with its ``parts`` and whether it is ``destructive``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    max_delete_ratio: float
    losses: tuple[TableLoss, ...] = ()  # every overwrite table that would lose rows
    drops: tuple[str, ...] = ()  # "table: drop column x"
    prod_edits: tuple[ProdEdit, ...] = ()  # edits made in the target that would be lost
    # tables another session held locked past MM_PLAN_LOCK_TIMEOUT: not counted (as in plan)
    unchecked: tuple[str, ...] = ()
    # target rows left pointing at rows the migration removes, one per relation
    dangling: tuple[DanglingReference, ...] = ()

    @property
    def over_ratio(self) -> tuple[TableLoss, ...]:
        return tuple(t for t in self.losses if t.ratio > self.max_delete_ratio)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def parts(self) -> list[str]:
        """The destructive parts, one line each (what the approval shows and a refusal says)."""
        return (
            [e.describe() for e in self.prod_edits]
            + [d.describe() for d in self.dangling]
            + [t.describe() for t in self.over_ratio]
            + list(self.drops)
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def destructive(self) -> bool:
        return bool(self.parts)


class DestructiveOutcome(DestructivePlan):
    """``destructive_check``'s outcome (its return value, and XCom key ``destructive`` when the
    plan is destructive): the plan, the decision and who made or refused it."""

    mode: str = ""  # on_destructive: ask, continue, fail
    decision: str | None = None
    decided_by: str | None = None
    # set when the plan was refused: on_destructive=fail, rejected
    refused_by: str | None = Field(default=None, exclude_if=lambda v: v is None)


def plan_drops(pending: Iterable[Difference]) -> list[str]:
    """The drops among the plan's structure changes (only there with ``allow_drop``)."""
    return [
        f"{p.table}: {change}"
        for p in pending
        for change in p.changes
        if change.startswith("drop ")
    ]


def _prod_edit(
    cur: psycopg.Cursor[Any], reader: ArchiveReader, entry: Table, rule: str
) -> ProdEdit | None:
    """The target rows ``rule`` would overwrite that are not identical to a source row."""
    t = row_writes.Target.of(entry)
    if t is None or entry.data is None or not table_exists(cur, t.schema, t.name):
        return None
    name = f"mm_edit_{zlib.crc32(t.name.encode()):08x}"
    try:
        with cur.connection.transaction():  # a savepoint: a failed COPY leaves the rest usable
            with reader.data(entry.data.member) as stream:
                stage = row_writes.stage(cur, row_writes.Counts(), t, stream, name)
            differ = sql.SQL("{} IS DISTINCT FROM {}").format(
                row_writes.row_text("d", t.columns), row_writes.row_text("s", t.columns)
            )
            if t.key:
                join = row_writes.key_match("s", "d", t.key)
                if rule == OVERWRITE:  # key gone from the source, or the row differs
                    template = sql.SQL(
                        "SELECT {k} AS mm_key FROM {t} AS d LEFT JOIN {s} AS s ON {j} "
                        "WHERE s.{k0} IS NULL OR {differ}"
                    )
                else:  # upsert: rows whose key the source has, that differ
                    template = sql.SQL(
                        "SELECT {k} AS mm_key FROM {t} AS d JOIN {s} AS s ON {j} WHERE {differ}"
                    )
                query = template.format(
                    k=row_writes.key_of("d", t.key),
                    t=t.ident,
                    s=stage,
                    j=join,
                    k0=sql.Identifier(t.key[0]),
                    differ=differ,
                )
                row = cur.execute(
                    sql.SQL("WITH r AS ({}) SELECT count(*), {} FROM r").format(
                        query, row_writes.sample_sql("r")
                    )
                ).fetchone()
                count, keys = (int(row[0]), tuple(row[1] or ())) if row else (0, ())
            else:
                row = cur.execute(
                    sql.SQL(
                        "SELECT count(*) FROM (SELECT {b} FROM {t} AS d EXCEPT ALL "
                        "SELECT {a} FROM {s} AS s) AS x"
                    ).format(
                        a=row_writes.row_text("s", t.columns),
                        b=row_writes.row_text("d", t.columns),
                        s=stage,
                        t=t.ident,
                    )
                ).fetchone()
                count, keys = (int(row[0]) if row else 0), ()
            cur.execute(sql.SQL("DROP TABLE {}").format(stage))
    except psycopg.Error as exc:
        log.info(
            "%s: the target's columns cannot take the source's rows as they are (%s); "
            "rows changed in prod not counted",
            t.name,
            str(exc).splitlines()[0],
        )
        return ProdEdit(table=t.name, rule=rule, rows=None)
    return ProdEdit(table=t.name, rule=rule, rows=count, keys=keys) if count else None


def _loss(cur: psycopg.Cursor[Any], reader: ArchiveReader, entry: Table) -> TableLoss | None:
    t, data = row_writes.Target.of(entry), entry.data
    if t is None or data is None:
        return None
    if not table_exists(cur, t.schema, t.name):
        return None
    target_rows = row_writes.count_rows(cur, t)
    if target_rows == 0:
        return None
    name = f"mm_loss_{zlib.crc32(t.name.encode()):08x}"
    try:
        with cur.connection.transaction():  # a savepoint: a failed COPY leaves the rest usable
            with reader.data(data.member) as stream:
                stage = row_writes.stage(cur, row_writes.Counts(), t, stream, name)
            if entry.natural_key and len(t.key) == 1:
                match_natural_keys(cur, t, stage, entry.natural_key)
            if t.key:
                row = cur.execute(
                    sql.SQL(
                        "SELECT count(*) FROM {} AS d WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})"
                    ).format(
                        t.ident,
                        stage,
                        sql.SQL(" AND ").join(
                            sql.SQL("s.{k} = d.{k}").format(k=sql.Identifier(k)) for k in t.key
                        ),
                    )
                ).fetchone()
                deleted = int(row[0]) if row else 0
            else:
                deleted = 0 if row_writes.same_rows(cur, t, stage) else target_rows
            cur.execute(sql.SQL("DROP TABLE {}").format(stage))
        return TableLoss(table=t.name, target_rows=target_rows, deleted=deleted)
    except psycopg.Error as exc:
        log.info(
            "%s: the target's columns cannot take the source's rows as they are (%s); "
            "counting rows it would lose as target rows - source rows",
            t.name,
            str(exc).splitlines()[0],
        )
        return TableLoss(
            table=t.name,
            target_rows=target_rows,
            deleted=max(0, target_rows - t.rows),
            exact=False,
        )


def assess(
    reader: ArchiveReader,
    target_dsn: str,
    pending: Iterable[Difference],
    *,
    max_delete_ratio: float = DEFAULT_MAX_DELETE_RATIO,
    changed: Iterable[str] = (),
) -> DestructivePlan:
    """What of the plan is destructive. Writes nothing (one transaction, rolled back).

    ``changed``: tables the plan found changed in the target since the last migration
    (``prod_edits.changed_since``); their rows the rule would replace are counted.
    """
    ratio = check_ratio(max_delete_ratio)
    pending = list(pending)
    entries = {t.name: t for t in reader.manifest.tables}
    losses: list[TableLoss] = []
    edits: list[ProdEdit] = []
    unchecked: list[str] = []
    dangling: list[DanglingReference] = []
    with pg.connect(target_dsn, application_name="migration-manager destructive check") as conn:
        cur = conn.cursor()
        # a table another session holds locked is not waited for (plan does the same): its
        # unit waits for it, and the drift guard checks it again before writing
        cur.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(pg.plan_lock_timeout()))
        )

        def counted(name: str, count: Any) -> Any:
            try:
                with conn.transaction():  # a savepoint: a lock timeout spoils only this table
                    return count()
            except psycopg.errors.LockNotAvailable:
                log.warning("%s: locked by another session; its losses were not counted", name)
                unchecked.append(name)
                return None

        for item in pending:
            entry = entries.get(str(item.table))
            if entry is None or item.rule != OVERWRITE:
                continue
            loss = counted(entry.name, lambda entry=entry: _loss(cur, reader, entry))
            if loss is not None and loss.deleted:
                losses.append(loss)
        rule_of = {item.table: item.rule for item in pending}
        refs = list(reader.manifest.references)
        # references from tables whose target rows stay (not replaced by the source's), whether
        # or not the plan has work for them (an unchanged schema-only table is not pending)
        kept = [r for r in refs if r.table in entries and entries[r.table].rule != OVERWRITE]
        referred = {r.target for r in kept}
        for item in pending:
            entry = entries.get(str(item.table))
            if item.table not in referred or item.rule != OVERWRITE or entry is None:
                continue
            if item.table in unchecked:
                continue
            found = counted(
                str(item.table), lambda e=entry: references.dangling(cur, reader, e, kept)
            )
            dangling.extend(found or ())
        for name in sorted(set(changed)):
            entry, rule = entries.get(name), rule_of.get(name)
            if entry is None or rule not in (OVERWRITE, UPSERT) or name in unchecked:
                continue
            edit = counted(
                name, lambda entry=entry, rule=rule: _prod_edit(cur, reader, entry, str(rule))
            )
            if edit is not None:
                edits.append(edit)
        conn.rollback()
    return DestructivePlan(
        max_delete_ratio=ratio,
        losses=tuple(losses),
        drops=tuple(plan_drops(pending)),
        prod_edits=tuple(edits),
        unchecked=tuple(unchecked),
        dangling=tuple(dangling),
    )
