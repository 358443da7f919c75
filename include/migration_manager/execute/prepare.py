"""Plan a migration on a target: check the file and the target, find the units with work to do.

Writes nothing. A table whose structure, sequences and rows already equal the source's gets no
unit (a :class:`TableResult` ``unchanged``, with the reason).
"""

from __future__ import annotations

import logging
from functools import partial

import sqlalchemy as sa

from migration_manager import pg
from migration_manager.archive import ArchiveReader
from migration_manager.checks import refuse_own_source
from migration_manager.config import DATA_RULES, KEYED_RULES, SKIP
from migration_manager.errors import PlanError
from migration_manager.execute.apply import manifest_entries
from migration_manager.execute.results import ExecutionPlan, TableResult
from migration_manager.execute.sequences import sequence_work
from migration_manager.execute.target import (
    Locked,
    check_types,
    reflect_target,
    same_structure,
    target_fingerprint,
    without_waiting,
)
from migration_manager.fingerprint import RowFingerprint, rows_unchanged
from migration_manager.manifest import Table
from migration_manager.references import compared_columns
from migration_manager.schema import (
    SchemaDiff,
    TableStructure,
    TypeStructure,
    diff_table,
    type_name,
)
from migration_manager.step_outcomes import Difference

log = logging.getLogger(__name__)


def prepare(
    reader: ArchiveReader, target_dsn: str, *, allow_drop: bool = False, verify: bool = True
) -> ExecutionPlan:
    """Check the file and the target; return the units that have work to do. Writes nothing."""
    if verify:
        reader.verify()
    entries = manifest_entries(reader)
    problems: list[str] = []
    quiet: list[TableResult] = []
    pending: list[Difference] = []
    needs_work: set[str] = set()
    checked: set[str] = set()
    target_fps: dict[str, RowFingerprint | None] = {}
    with pg.sa_connection(target_dsn) as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        identity = pg.database_identity(driver)
        refuse_own_source(
            reader.manifest,
            identity,
            file=reader.name,
            target_name=f"({pg.endpoint(target_dsn).shown})",
        )
        structures = {name: e.structure for name, e in entries.items() if e.rule != SKIP}
        uses: dict[tuple[str, str], tuple[TypeStructure, list[str]]] = {}
        for name, structure in structures.items():
            for t in structure.types:
                uses.setdefault((t.schema, t.name), (t, []))[1].append(name)
        type_problems, type_warnings, missing_types = check_types(conn, uses)
        problems.extend(type_problems)
        for w in type_warnings:
            log.warning("%s", w)
        reflected, locked = reflect_target(conn, structures)
        for name, e in entries.items():
            rule = e.rule
            if rule == SKIP:
                quiet.append(TableResult(table=name, rule=rule, status="skipped"))
                continue
            structure = structures[name]
            if name in locked:
                # not waited for: its unit compares and applies it (and waits, as always)
                log.warning("%s: locked by another session; not compared, applied", name)
                needs_work.add(name)
                pending.append(Difference(table=name, rule=rule, changes=[LOCKED]))
                continue
            found = reflected.get(name)
            target_pk = found.primary_key if found is not None else None
            if rule in KEYED_RULES and target_pk is not None and target_pk != structure.primary_key:
                problems.append(
                    f"{name}: {rule} matches rows by the primary key ({', '.join(structure.primary_key)}), "
                    f"but the target's key is ({', '.join(target_pk) or 'none'}); align the keys or use overwrite"
                )
                continue
            if found is not None and same_structure(structure, found):
                diff = SchemaDiff(table=name)  # what Alembic would compare is identical
            else:
                diff = diff_table(conn, structure, allow_drop=allow_drop)
            changes = [
                f"create type {type_name(t)}"
                for t in structure.types
                if (t.schema, t.name) in missing_types
            ] + [c.description for c in diff.changes]
            if not changes and not diff.skipped:
                checked.add(name)
            try:
                # a table locked by another session (DDL, LOCK TABLE) is not waited for: it
                # gets its unit, which waits for it as always
                known: RowFingerprint | None = None
                if rule in DATA_RULES:
                    fp = without_waiting(conn, partial(target_fingerprint, conn, structure))
                    if isinstance(fp, RowFingerprint) or fp is None:
                        target_fps[name] = fp
                    data_columns = list(e.data.columns) if e.data else []
                    if (
                        isinstance(fp, RowFingerprint)
                        and found is not None
                        and data_columns == [c.name for c in found.columns]
                        and not e.natural_key  # compared without the key: see _unchanged
                    ):
                        known = fp  # the same columns in the same order: the same fingerprint
                compare = partial(
                    _compare, conn, e, structure, rule, diff.creates_table, changes, known
                )
                changes, reason = without_waiting(conn, compare)
            except Locked:
                log.warning("%s: locked by another session; not compared, applied", name)
                changes, reason = [*changes, LOCKED], None
            if changes:
                checked.discard(name)
            if reason is None:
                needs_work.add(name)
                pending.append(Difference(table=name, rule=rule, changes=changes))
            else:
                quiet.append(
                    TableResult(
                        table=name,
                        rule=rule,
                        status="unchanged",
                        unchanged=e.data.rows if e.data else 0,
                        warnings=tuple(f"kept: {c.description}" for c in diff.skipped),
                        reason=reason,
                    )
                )
        conn.rollback()
    if problems:
        raise PlanError(problems, heading="The migration cannot be applied to this target")
    unit_list = tuple(u for u in reader.manifest.units if any(t in needs_work for t in u.tables))
    # a quiet table in a mapped unit is applied (and reported) with its unit
    mapped = {t for u in unit_list for t in u.tables}
    quiet = [q for q in quiet if q.table not in mapped]
    return ExecutionPlan(
        migration_id=reader.manifest.id,
        units=unit_list,
        tables=tuple(quiet),
        pending=tuple(pending),
        warnings=tuple(reader.manifest.warnings) + tuple(type_warnings),
        checked=frozenset(checked & mapped),
        target_fingerprints=target_fps,
        target_identity=identity,
    )


def _compare(
    conn: sa.Connection,
    entry: Table,
    structure: TableStructure,
    rule: str,
    creates_table: bool,
    changes: list[str],
    known: RowFingerprint | None = None,
) -> tuple[list[str], str | None]:
    """The table's changes (structure, then sequences) and, when none, why it needs no unit."""
    if not changes and not creates_table:
        changes = sequence_work(conn, structure, rule)
    return changes, None if changes else _unchanged(conn, entry, structure, rule, known)


def _unchanged(
    conn: sa.Connection,
    entry: Table,
    structure: TableStructure,
    rule: str,
    known: RowFingerprint | None = None,
) -> str | None:
    """Why a table whose structure and sequences match needs no unit (None: it needs one).

    ``known``: the target's fingerprint over the same columns, already taken (not scanned again).
    """
    if rule not in DATA_RULES:
        return "structure equal to the source's; the rule moves no rows"
    data, recorded = entry.data, entry.fingerprint
    if not data or not recorded:
        return None  # a file without fingerprints (or a table too large for one): apply
    raw = conn.connection.driver_connection
    assert raw is not None
    columns, key = compared_columns(data.columns, structure.primary_key, entry.natural_key)
    with raw.cursor() as cur:
        why = rows_unchanged(
            cur,
            structure.schema or "public",
            structure.name,
            columns,
            key,
            rule,
            recorded,
            target=known,
        )
    return f"structure equal; {why}" if why else None


LOCKED = "not compared (locked by another session): applied"
