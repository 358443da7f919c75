"""Apply one unit to the target in a single transaction: structure, rows, sequences.

All of it or nothing; a drift guard first checks the unit's tables are as the plan saw them.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn

import psycopg
import sqlalchemy as sa
from psycopg import sql

from migration_manager import pg, row_writes
from migration_manager.archive import ArchiveReader
from migration_manager.config import DATA_RULES, INSERT_IGNORE, OVERWRITE, UPSERT
from migration_manager.errors import ApplyError, MigrationError, TransientError
from migration_manager.execute.results import TableResult, UnitResult
from migration_manager.execute.sequences import fix_sequences
from migration_manager.fingerprint import RowFingerprint
from migration_manager.manifest import Data, Table
from migration_manager.plan import Unit
from migration_manager.prod_edits import (
    TooLarge,
    copied_fingerprint,
    current_fingerprint,
    fingerprints_of,
    lock_for_check,
)
from migration_manager.references import match_natural_keys
from migration_manager.schema import (
    StatementRecorder,
    TableStructure,
    apply_diff,
    defer_keys,
    diff_table,
    ensure_sequences,
    ensure_types,
    own_sequences,
    run_ops,
)

log = logging.getLogger(__name__)


def manifest_entries(reader: ArchiveReader) -> dict[str, Table]:
    """The manifest's table entries by table name."""
    return {t.name: t for t in reader.manifest.tables}


def _lock_timeout() -> str:
    return os.environ.get("MM_LOCK_TIMEOUT", "60s")


def unit_entries(reader: ArchiveReader, unit: Unit) -> dict[str, Table]:
    """What ``apply_unit`` needs of the manifest for ``unit``: its tables' entries.

    Small enough for XCom: a mapped task then needs no manifest of its own. A fingerprint keeps
    its count and sums (what :func:`copied_fingerprint` records), not its list of row hashes,
    and says the server encoding the source took it in (the file's source's).
    """
    entries = manifest_entries(reader)
    encoding = reader.manifest.source.server_encoding
    out: dict[str, Table] = {}
    for t in unit.tables:
        if t not in entries:
            continue
        entry, fp = entries[t], entries[t].fingerprint
        if fp is not None:
            fp = fp.model_copy(update={"listed": None, "encoding": encoding})
            entry = entry.model_copy(update={"fingerprint": fp})
        out[t] = entry
    return out


def _data(entry: Table) -> Data:
    """The table's data member, which a rule that moves rows has (the manifest says so)."""
    return entry.data or _no_rows(entry.name)


def _no_rows(table: str) -> NoReturn:
    raise ApplyError(
        f"{table}: its rule moves rows, but the migration file has none for it", terminal=True
    )


def apply_unit(
    reader: ArchiveReader | None,
    target_dsn: str,
    unit: Unit,
    *,
    allow_drop: bool = False,
    on_sql: Callable[[str], None] | None = None,
    dry_run: bool = False,
    entries: Mapping[str, Table] | None = None,
    checked: Collection[str] = (),
    expected: Mapping[str, RowFingerprint | None] | None = None,
) -> UnitResult:
    """Apply one unit to the target in a single transaction; all of it or nothing.

    ``dry_run`` does exactly the same work and rolls it back: the result says what a run would do.
    ``entries``: the unit's manifest entries (``unit_entries``), else read from ``reader``;
    ``reader`` may then be None when no table of the unit loads rows. ``checked``: tables whose
    structure ``prepare`` found equal to the source's (types, sequences, columns, indexes):
    their structure step is not repeated.
    """
    started = time.monotonic()
    if entries is None:
        if reader is None:
            raise ApplyError(f"Unit {unit.id}: no migration file and no entries", terminal=True)
        entries = manifest_entries(reader)
    missing = [t for t in unit.tables if t not in entries]
    if missing:
        raise ApplyError(
            f"Unit {unit.id} names tables the migration file lacks: {', '.join(missing)}",
            terminal=True,
        )
    structures = {t: entries[t].structure for t in unit.tables}
    rule_of = {t: entries[t].rule for t in unit.tables}
    ddl: dict[str, list[str]] = {t: [] for t in unit.tables}
    kinds: dict[str, list[str]] = {t: [] for t in unit.tables}
    warnings: dict[str, list[str]] = {t: [] for t in unit.tables}
    counts = {t: row_writes.Counts() for t in unit.tables}
    seconds = dict.fromkeys(unit.tables, 0.0)
    current = unit.tables[0]
    # a new table loaded by COPY gets its keys and indexes after its rows (then its foreign keys)
    keys_later: dict[str, list[Any]] = {}
    foreign_later: dict[str, list[Any]] = {}
    created: set[str] = set()
    try:
        with pg.sa_connection(target_dsn) as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            pg.run_composed(
                conn, sql.SQL("SET lock_timeout = {}").format(sql.Literal(_lock_timeout()))
            )
            # 0. drift guard: the tables are as the plan (and an approval) saw them
            if expected:
                with raw.cursor() as guard:
                    for name in unit.tables:
                        current = name
                        if name in expected:
                            _check_drift(guard, unit, structures[name], expected[name])
            with raw.cursor() as probe:
                deferred = _keys_after_load(
                    unit, structures, rule_of, _new_tables(probe, structures)
                )
            # 1. structure, referenced tables first
            for name in unit.tables:
                current = name
                t0 = time.monotonic()
                structure = structures[name]
                if name in checked:
                    log.info("%s: structure equal to the source's (checked by the plan)", name)
                    continue

                def execute(stmt: str, _name: str = name) -> None:
                    # final SQL ("%" in an enum label is a "%"), one statement only (pg.run_one)
                    pg.run_one(raw, stmt)
                    ddl[_name].append(stmt)

                if (
                    structure.schema
                    and not conn.execute(
                        sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                        {"s": structure.schema},
                    ).first()
                ):
                    execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                        .format(sql.Identifier(structure.schema))
                        .as_string(raw)
                    )
                ensure_types(conn, structure, execute)
                ensure_sequences(conn, structure, execute)
                diff = diff_table(conn, structure, allow_drop=allow_drop)
                if diff.creates_table:
                    created.add(name)
                    if name in deferred:
                        keys_later[name], foreign_later[name] = defer_keys(diff)
                with StatementRecorder(conn) as recorder:
                    apply_diff(conn, diff)
                ddl[name].extend(recorder.statements)
                kinds[name].extend(c.kind for c in diff.changes)
                own_sequences(conn, structure, execute)
                for skipped in diff.skipped:
                    warnings[name].append(
                        f"kept in the target (dropping is off): {skipped.description}"
                    )
                    log.warning(
                        "%s: kept in the target (allow_drop is off): %s", name, skipped.description
                    )
                seconds[name] += time.monotonic() - t0

            # 2. rows: stage, delete (dependents first), write (referenced first)
            data_tables = [t for t in unit.tables if rule_of[t] in DATA_RULES]
            targets = {}
            for name in data_tables:
                targets[name] = row_writes.Target.of(entries[name]) or _no_rows(name)
            cur = raw.cursor()
            cur.execute("SET LOCAL synchronous_commit = off")
            staged: dict[str, sql.Identifier] = {}
            direct: set[str] = set()
            for name in data_tables:
                current = name
                t0 = time.monotonic()
                t = targets[name]
                if reader is None:
                    raise ApplyError(
                        f"{name}: the unit loads rows but has no migration file", terminal=True
                    )
                if rule_of[name] == OVERWRITE and row_writes.is_empty(cur, t):
                    direct.add(name)
                else:
                    with reader.data(_data(entries[name]).member) as stream:
                        staged[name] = row_writes.stage(
                            cur,
                            counts[name],
                            t,
                            stream,
                            f"mm_stage_{zlib.crc32(name.encode()):08x}",
                        )
                    natural = entries[name].natural_key
                    if natural and rule_of[name] in (OVERWRITE, UPSERT) and len(t.key) == 1:
                        # prod's rows keep their keys, and what refers to them stays valid
                        match_natural_keys(cur, t, staged[name], natural)
                seconds[name] += time.monotonic() - t0
            replace: set[str] = set()
            for name in reversed(data_tables):
                current = name
                t0 = time.monotonic()
                t = targets[name]
                if rule_of[name] == OVERWRITE and name in staged:
                    if t.key:
                        row_writes.delete_missing(cur, counts[name], t, staged[name])
                    elif row_writes.same_rows(cur, t, staged[name]):
                        counts[name].unchanged = t.rows
                    else:
                        replace.add(name)
                        counts[name].deleted += row_writes.delete_all(cur, counts[name], t)
                seconds[name] += time.monotonic() - t0
            for name in data_tables:
                current = name
                t0 = time.monotonic()
                t = targets[name]
                c = counts[name]
                rule = rule_of[name]
                if name in direct:
                    assert reader is not None
                    with reader.data(_data(entries[name]).member) as stream:
                        c.inserted += row_writes.copy_in(cur, c, t.ident, t, stream, f"load {name}")
                elif rule == OVERWRITE and not t.key:
                    if name in replace:
                        c.inserted += row_writes.insert_all(cur, c, t, staged[name])
                elif rule == OVERWRITE and len(unit.tables) == 1:
                    try:
                        with raw.transaction():  # a savepoint
                            row_writes.upsert(cur, c, t, staged[name], update=True, total=t.rows)
                    except psycopg.errors.UniqueViolation:
                        # rows swapped values of a unique column: updating row by row trips the
                        # constraint midway; replacing the rows gives the same end state
                        log.info("%s: unique values moved between rows; replacing all rows", name)
                        c.deleted += row_writes.delete_all(cur, c, t)
                        c.inserted += row_writes.insert_all(cur, c, t, staged[name])
                elif rule in (OVERWRITE, UPSERT):
                    row_writes.upsert(cur, c, t, staged[name], update=True, total=t.rows)
                elif rule == INSERT_IGNORE:
                    row_writes.upsert(cur, c, t, staged[name], update=False, total=t.rows)
                seconds[name] += time.monotonic() - t0

            # the new tables' keys, unique constraints and indexes, then their foreign keys
            for later in (keys_later, foreign_later):
                for name in unit.tables:
                    if later.get(name):
                        current = name
                        t0 = time.monotonic()
                        with StatementRecorder(conn) as recorder:
                            run_ops(conn, later[name])
                        ddl[name].extend(recorder.statements)
                        seconds[name] += time.monotonic() - t0
            for name in direct:  # rows copied into an empty table are all new
                row_writes.sample_table_keys(cur, counts[name], targets[name], "inserted")

            # 3. sequences past the largest id
            for name in unit.tables:
                current = name
                fix_sequences(cur, structures[name], rule_of[name], counts[name])
            current = unit.tables[-1]
            left: dict[str, RowFingerprint | None] = {}
            if dry_run:
                raw.rollback()  # a preview: the same work as a run, then undone
            else:
                # the fingerprints as this unit leaves its tables (recorded after the run)
                left = _fingerprints_left(
                    cur,
                    data_tables,
                    structures,
                    entries,
                    counts,
                    direct,
                    created | set(expected or ()),
                )
                raw.commit()
    except MigrationError as exc:
        raise ApplyError(f"{current}: {exc}", terminal=exc.terminal) from exc
    except (psycopg.OperationalError, sa.exc.OperationalError) as exc:
        raise TransientError(
            f"{current}: {_pg_message(exc)}; the unit was rolled back and may be retried"
        ) from exc
    except (psycopg.Error, sa.exc.SQLAlchemyError) as exc:
        raise ApplyError(
            f"{current}: {_pg_message(exc)}; the unit ({', '.join(unit.tables)}) was rolled back, the target is unchanged",
            terminal=True,
        ) from exc

    results = []
    for name in unit.tables:
        c = counts[name]
        changed = bool(ddl[name]) or c.inserted or c.updated or c.deleted
        results.append(
            TableResult(
                table=name,
                rule=rule_of[name],
                status="applied" if changed else "unchanged",
                ddl=tuple(ddl[name]),
                inserted=c.inserted,
                updated=c.updated,
                deleted=c.deleted,
                unchanged=c.unchanged,
                seconds=round(seconds[name], 3),
                warnings=tuple(warnings[name]),
                data_sql=tuple(c.statements),
                inserted_keys=tuple(c.inserted_keys),
                updated_keys=tuple(c.updated_keys),
                deleted_keys=tuple(c.deleted_keys),
                structure_changes=tuple(kinds[name]),
            )
        )
        if on_sql:
            for stmt in ddl[name]:
                on_sql(stmt)
    result = UnitResult(
        unit=unit.id,
        tables=tuple(results),
        seconds=round(time.monotonic() - started, 3),
        fingerprints=left,
    )
    for r in results:
        log.info(
            "%s (%s): %s; %d DDL, +%d ~%d -%d =%d rows in %.2f s",
            r.table,
            r.rule,
            r.status,
            len(r.ddl),
            r.inserted,
            r.updated,
            r.deleted,
            r.unchanged,
            r.seconds,
        )
    return result


def _new_tables(cur: psycopg.Cursor[Any], structures: Mapping[str, TableStructure]) -> set[str]:
    """The unit's tables the target lacks (they will be created in the unit)."""
    names = list(structures)
    found = cur.execute(
        "SELECT t.name FROM unnest(%s::text[], %s::text[]) AS t(schema, name) "
        "WHERE to_regclass(format('%%I.%%I', t.schema, t.name)) IS NULL",
        (
            [structures[n].schema or "public" for n in names],
            [structures[n].name for n in names],
        ),
    ).fetchall()
    return {str(r[0]) for r in found}


def _keys_after_load(
    unit: Unit,
    structures: Mapping[str, TableStructure],
    rule_of: Mapping[str, str],
    new: set[str],
) -> set[str]:
    """New tables whose keys, indexes and foreign keys can be built after their COPY load.

    Tables created and loaded whole (``overwrite``, so into the empty new table by COPY): their
    rows need no index while they load. Not a table another table of the unit refers to and
    that keeps building its keys first (its foreign key needs the referred key), nor one
    whose foreign key refers to a table later in the unit (a cycle: ``schema.sql`` lists each
    table's statements together, so it must still run table by table).
    """
    order = {t: i for i, t in enumerate(unit.tables)}
    chosen = {t for t in unit.tables if t in new and rule_of[t] == OVERWRITE}
    changed = True
    while changed:
        changed = False
        for t in unit.tables:
            for fk in structures[t].foreign_keys:
                ref = fk.referred_table
                if ref == t or ref not in order:
                    continue
                if t in chosen and order[ref] > order[t]:
                    chosen.discard(t)
                    changed = True
                if t not in chosen and ref in chosen:
                    chosen.discard(ref)
                    changed = True
    return chosen


def _fingerprints_left(
    cur: psycopg.Cursor[Any],
    data_tables: list[str],
    structures: Mapping[str, TableStructure],
    entries: Mapping[str, Table],
    counts: Mapping[str, row_writes.Counts],
    direct: Collection[str],
    alone: Collection[str],
) -> dict[str, RowFingerprint | None]:
    """The fingerprints of the unit's tables as it leaves them, in its transaction.

    A table loaded by COPY into its empty self, which no other session could write meanwhile
    (created in the unit, or locked by the drift guard: ``alone``), holds the file's rows: it
    gets the source's fingerprint from the file when :func:`copied_fingerprint` can show the
    scan would give the same; every other table is scanned.
    """
    left: dict[str, RowFingerprint | None] = {}
    for name in data_tables:
        schema = structures[name].schema or "public"
        known = None
        if name in direct and name in alone:
            columns = _data(entries[name]).columns
            known = copied_fingerprint(
                cur,
                schema,
                name,
                [(c, structures[name].column(c).type) for c in columns],
                entries[name].fingerprint,
                counts[name].inserted,
            )
        if known is not None:
            left[name] = known
        else:
            left.update(fingerprints_of(cur, [(schema, name)]))
    return left


def _check_drift(
    cur: psycopg.Cursor[Any],
    unit: Unit,
    structure: TableStructure,
    before: RowFingerprint | None,
) -> None:
    """Fail (terminal) when the table is no longer as the plan saw it; nothing is written yet.

    The table is locked against other writers first (SHARE ROW EXCLUSIVE, until the unit's
    transaction ends), so it cannot change between this check and the unit's writes.
    """
    schema, name = structure.schema or "public", structure.name
    lock_for_check(cur, schema, name)
    try:
        now = current_fingerprint(cur, schema, name)
    except TooLarge:
        return
    if before is None and now is None:
        return
    if before is not None and now is not None and now.same_rows(before):
        return
    if before is None:
        what = "the plan found no such table, now the target has one"
    elif now is None:
        what = "the table the plan saw is gone"
    else:
        what = f"it had {before.rows} row(s) at plan time, now {now.rows}; its rows differ"
    raise ApplyError(
        f"changed in the target since the plan ({what}). Nothing of unit {unit.label} was "
        "written: the plan (and any approval of it) no longer describes the target. Run the "
        "migration again: a new run plans against the target as it is now (and asks again "
        "when that plan is destructive)",
        terminal=True,
    )


def _pg_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    detail = getattr(diag, "message_detail", None) if diag else None
    text = primary or str(orig).splitlines()[0]
    return f"{text} ({detail})" if detail else text
