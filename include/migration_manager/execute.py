"""Execute a migration file on a target: plan the units, then apply each in one transaction."""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg import sql

from migration_manager import pg, rules
from migration_manager.archive import ArchiveReader
from migration_manager.checks import refuse_own_source
from migration_manager.config import DATA_RULES, INSERT_IGNORE, KEYED_RULES, OVERWRITE, SKIP, UPSERT
from migration_manager.errors import ApplyError, MigrationError, PlanError, TransientError
from migration_manager.fingerprint import RowFingerprint, rows_unchanged
from migration_manager.plan import Unit
from migration_manager.prod_edits import (
    TooLarge,
    current_fingerprint,
    fingerprints_of,
    lock_for_check,
)
from migration_manager.schema import (
    SchemaDiff,
    StatementRecorder,
    TableStructure,
    TypeStructure,
    apply_diff,
    diff_table,
    ensure_sequences,
    ensure_types,
    find_type,
    list_tables,
    own_sequences,
    reflect_tables,
)

log = logging.getLogger(__name__)


SAMPLE_KINDS = ("inserted_keys", "updated_keys", "deleted_keys")


@dataclass(frozen=True)
class TableResult:
    table: str
    rule: str
    status: str  # "applied", "unchanged", "skipped"
    ddl: tuple[str, ...] = ()
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    data_sql: tuple[str, ...] = ()
    # up to rules.SAMPLE_KEYS primary-key values (text) of the rows inserted / updated / deleted
    inserted_keys: tuple[str, ...] = ()
    updated_keys: tuple[str, ...] = ()
    deleted_keys: tuple[str, ...] = ()
    reason: str = ""  # why an unchanged table got no unit
    # the kinds of the structure changes made (schema.SchemaChange.kind: add_table, add_column, ...)
    structure_changes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("ddl", "warnings", "data_sql", "structure_changes", *SAMPLE_KINDS):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TableResult:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fields)


@dataclass(frozen=True)
class UnitResult:
    unit: str
    tables: tuple[TableResult, ...]
    seconds: float
    # each data table's fingerprint as the unit left it, taken just before its commit (not in a
    # dry run): recorded per target after the run (prod_edits.TargetRecord)
    fingerprints: Mapping[str, RowFingerprint | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "tables": [t.to_dict() for t in self.tables],
            "seconds": self.seconds,
            "fingerprints": {
                k: (v.to_dict() if v is not None else None) for k, v in self.fingerprints.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UnitResult:
        return cls(
            unit=d["unit"],
            tables=tuple(TableResult.from_dict(t) for t in d["tables"]),
            seconds=d["seconds"],
            fingerprints={
                k: (RowFingerprint.from_dict(v) if v is not None else None)
                for k, v in (d.get("fingerprints") or {}).items()
            },
        )


@dataclass(frozen=True)
class ExecutionPlan:
    migration_id: str
    units: tuple[Unit, ...]
    tables: tuple[TableResult, ...] = field(
        default=()
    )  # tables needing no unit (skipped / unchanged)
    pending: tuple[dict[str, Any], ...] = field(
        default=()
    )  # per table: rule and structure changes to make
    warnings: tuple[str, ...] = ()
    # tables whose structure (types, sequences, columns, indexes, ...) already equals the source's
    checked: frozenset[str] = frozenset()
    # each data table's fingerprint on the target as the plan saw it (None: the target lacks it);
    # tables too large for one, or locked, are absent (see prod_edits)
    target_fingerprints: Mapping[str, RowFingerprint | None] = field(default_factory=dict)
    target_identity: pg.DatabaseIdentity | None = None

    def unit_fingerprints(self, unit: Unit) -> dict[str, dict[str, Any] | None]:
        """What the unit's drift guard checks: its tables' fingerprints the plan saw (small)."""
        return {
            t: (fp.to_dict() if fp is not None else None)
            for t in unit.tables
            if t in self.target_fingerprints
            for fp in [self.target_fingerprints[t]]
        }


def _entries(reader: ArchiveReader) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in reader.manifest["tables"]}


def _reflect_target(
    conn: sa.Connection, structures: Mapping[str, TableStructure]
) -> tuple[dict[str, TableStructure], set[str]]:
    """The target's structure of every table it has among ``structures`` (one pass per schema),
    and the tables it could not read because another session holds them locked."""
    by_schema: dict[str, list[str]] = {}
    default = conn.dialect.default_schema_name or "public"
    for name, structure in structures.items():
        by_schema.setdefault(structure.schema or default, []).append(name)
    out: dict[str, TableStructure] = {}
    locked: set[str] = set()
    for schema, names in by_schema.items():
        present = set(list_tables(conn, schema))
        wanted = [n for n in names if n in present]
        try:
            out.update(_without_waiting(conn, partial(reflect_tables, conn, schema, wanted)))
        except _Locked:  # one of them is locked: find which, reflect the others
            for name in wanted:
                try:
                    out.update(
                        _without_waiting(conn, partial(reflect_tables, conn, schema, [name]))
                    )
                except _Locked:
                    locked.add(name)
    return out, locked


class _Locked(Exception):
    """A table the plan reads is locked by another session (``MM_PLAN_LOCK_TIMEOUT``)."""


def _without_waiting(conn: sa.Connection, read: Callable[[], _T]) -> _T:
    """``read()`` in a savepoint that waits at most ``MM_PLAN_LOCK_TIMEOUT`` for a lock."""
    try:
        with conn.begin_nested():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{pg.plan_lock_timeout()}'")
            return read()
    except (psycopg.errors.LockNotAvailable, sa.exc.OperationalError) as exc:
        if isinstance(getattr(exc, "orig", exc), psycopg.errors.LockNotAvailable):
            raise _Locked(str(exc)) from exc
        raise


def _comparable(structure: TableStructure) -> dict[str, Any]:
    d = structure.to_dict()
    # a sequence's position is data, not structure (compared by _sequence_work)
    d["sequences"] = [{**q, "last_value": None} for q in d.get("sequences") or ()]
    return d


def _same_structure(source: TableStructure, target: TableStructure) -> bool:
    """The target reflects to exactly the source's structure: the comparison would find nothing.

    The cheap first look of ``prepare`` (one reflection of every table instead of a comparison
    per table); anything that differs at all goes through :func:`diff_table`.
    """
    return _comparable(source) == _comparable(target)


def _check_types(
    conn: sa.Connection, uses: Mapping[tuple[str, str], tuple[TypeStructure, list[str]]]
) -> tuple[list[str], list[str], set[tuple[str, str]]]:
    """Compare the enums and domains the tables use with the target's types of the same names.

    Returns problems (the migration cannot be applied), warnings, and the types the target
    lacks (``apply_unit`` creates them). An enum lacking some of the source's labels is a
    problem: ``ALTER TYPE ... ADD VALUE`` may not be used in the transaction that writes rows
    with the new label, so the unit cannot add them itself. A domain defined otherwise is
    left as it is, with a warning.
    """
    problems: list[str] = []
    warnings: list[str] = []
    missing: set[tuple[str, str]] = set()
    default_schema = conn.dialect.default_schema_name
    for key, (source, tables) in uses.items():
        names = ", ".join(tables)
        target = find_type(conn, source.schema, source.name)
        if target is None:
            missing.add(key)
        elif target.kind != source.kind:
            problems.append(
                f"{names}: the source's {source.kind} type {source.qualified} is a {target.kind} "
                f"type in the target; rename or drop the target's {source.qualified}, then run "
                "the migration again"
            )
        elif source.kind == "enum":
            lacking = [label for label in source.labels if label not in target.labels]
            if lacking:
                literals = [sql.Literal(label).as_string(None).strip() for label in lacking]
                labels = ", ".join(literals)
                add = "; ".join(
                    f"ALTER TYPE {source.qualified} ADD VALUE {literal}" for literal in literals
                )
                problems.append(
                    f"{names}: the target's enum type {source.qualified} lacks the label(s) "
                    f"{labels} of the source's; add them on the target first ({add};), "
                    "then run the migration again"
                )
            elif [label for label in target.labels if label in source.labels] != list(
                source.labels
            ):
                warnings.append(
                    f"{names}: the target's enum type {source.qualified} orders its labels "
                    f"otherwise ({', '.join(target.labels)}) than the source's "
                    f"({', '.join(source.labels)}); sorting by it follows the target's order"
                )
        elif source.kind == "domain" and target.domain_definition(
            default_schema
        ) != source.domain_definition(default_schema):
            warnings.append(
                f"{names}: the target's domain {source.qualified} is defined otherwise than the "
                f"source's ({_describe_domain(target)} instead of {_describe_domain(source)}); "
                "it is left as it is: rows it refuses fail their unit"
            )
    return problems, warnings, missing


def _describe_domain(t: TypeStructure) -> str:
    parts = [t.base_type or "?"]
    if t.default is not None:
        parts.append(f"DEFAULT {t.default}")
    if t.not_null:
        parts.append("NOT NULL")
    parts.extend(c["definition"] for c in t.checks)
    return " ".join(parts)


def prepare(
    reader: ArchiveReader, target_dsn: str, *, allow_drop: bool = False, verify: bool = True
) -> ExecutionPlan:
    """Check the file and the target; return the units that have work to do. Writes nothing."""
    if verify:
        reader.verify()
    entries = _entries(reader)
    problems: list[str] = []
    quiet: list[TableResult] = []
    pending: list[dict[str, Any]] = []
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
        structures = {
            name: TableStructure.from_dict(e["structure"])
            for name, e in entries.items()
            if e["rule"] != SKIP
        }
        uses: dict[tuple[str, str], tuple[TypeStructure, list[str]]] = {}
        for name, structure in structures.items():
            for t in structure.types:
                uses.setdefault((t.schema, t.name), (t, []))[1].append(name)
        type_problems, type_warnings, missing_types = _check_types(conn, uses)
        problems.extend(type_problems)
        for w in type_warnings:
            log.warning("%s", w)
        reflected, locked = _reflect_target(conn, structures)
        for name, e in entries.items():
            rule = e["rule"]
            if rule == SKIP:
                quiet.append(TableResult(name, rule, "skipped"))
                continue
            structure = structures[name]
            if name in locked:
                # not waited for: its unit compares and applies it (and waits, as always)
                log.warning("%s: locked by another session; not compared, applied", name)
                needs_work.add(name)
                pending.append({"table": name, "rule": rule, "changes": [LOCKED]})
                continue
            found = reflected.get(name)
            target_pk = found.primary_key if found is not None else None
            if rule in KEYED_RULES and target_pk is not None and target_pk != structure.primary_key:
                problems.append(
                    f"{name}: {rule} matches rows by the primary key ({', '.join(structure.primary_key)}), "
                    f"but the target's key is ({', '.join(target_pk) or 'none'}); align the keys or use overwrite"
                )
                continue
            if found is not None and _same_structure(structure, found):
                diff = SchemaDiff(table=name)  # what Alembic would compare is identical
            else:
                diff = diff_table(conn, structure, allow_drop=allow_drop)
            changes = [
                f"create type {t.qualified}"
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
                    fp = _without_waiting(conn, partial(_target_fingerprint, conn, structure))
                    if isinstance(fp, RowFingerprint) or fp is None:
                        target_fps[name] = fp
                    data_columns = list((e.get("data") or {}).get("columns") or ())
                    if (
                        isinstance(fp, RowFingerprint)
                        and found is not None
                        and data_columns == [c.name for c in found.columns]
                    ):
                        known = fp  # the same columns in the same order: the same fingerprint
                compare = partial(
                    _compare, conn, e, structure, rule, diff.creates_table, changes, known
                )
                changes, reason = _without_waiting(conn, compare)
            except _Locked:
                log.warning("%s: locked by another session; not compared, applied", name)
                changes, reason = [*changes, LOCKED], None
            if changes:
                checked.discard(name)
            if reason is None:
                needs_work.add(name)
                pending.append({"table": name, "rule": rule, "changes": changes})
            else:
                quiet.append(
                    TableResult(
                        name,
                        rule,
                        "unchanged",
                        unchanged=int((e.get("data") or {}).get("rows") or 0),
                        warnings=tuple(f"kept: {c.description}" for c in diff.skipped),
                        reason=reason,
                    )
                )
        conn.rollback()
    if problems:
        raise PlanError(problems, heading="The migration cannot be applied to this target")
    unit_list = tuple(
        Unit.from_dict(u)
        for u in reader.manifest["units"]
        if any(t in needs_work for t in u["tables"])
    )
    # a quiet table in a mapped unit is applied (and reported) with its unit
    mapped = {t for u in unit_list for t in u.tables}
    quiet = [q for q in quiet if q.table not in mapped]
    return ExecutionPlan(
        migration_id=reader.manifest["id"],
        units=unit_list,
        tables=tuple(quiet),
        pending=tuple(pending),
        warnings=tuple(reader.manifest.get("warnings") or ()) + tuple(type_warnings),
        checked=frozenset(checked & mapped),
        target_fingerprints=target_fps,
        target_identity=identity,
    )


_TOO_LARGE = object()


def _target_fingerprint(conn: sa.Connection, structure: TableStructure) -> object:
    """The table's fingerprint on the target (prod_edits.current_fingerprint), or _TOO_LARGE."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        try:
            return current_fingerprint(cur, structure.schema or "public", structure.name)
        except TooLarge:
            return _TOO_LARGE


def _compare(
    conn: sa.Connection,
    entry: Mapping[str, Any],
    structure: TableStructure,
    rule: str,
    creates_table: bool,
    changes: list[str],
    known: RowFingerprint | None = None,
) -> tuple[list[str], str | None]:
    """The table's changes (structure, then sequences) and, when none, why it needs no unit."""
    if not changes and not creates_table:
        changes = _sequence_work(conn, structure, rule)
    return changes, None if changes else _unchanged(conn, entry, structure, rule, known)


def _sequence_work(conn: sa.Connection, structure: TableStructure, rule: str) -> list[str]:
    """The sequence statements ``apply_unit`` would run on this table (nothing is executed)."""
    planned: list[str] = []
    ensure_sequences(conn, structure, planned.append)
    own_sequences(conn, structure, planned.append)
    if not planned:
        raw = conn.connection.driver_connection
        assert raw is not None
        counts = rules.Counts()
        with raw.cursor() as cur:
            _fix_sequences(cur, structure, rule, counts, execute=False)
        planned = list(counts.statements)
    return [f"sequence: {stmt}" for stmt in planned]


def _unchanged(
    conn: sa.Connection,
    entry: Mapping[str, Any],
    structure: TableStructure,
    rule: str,
    known: RowFingerprint | None = None,
) -> str | None:
    """Why a table whose structure and sequences match needs no unit (None: it needs one).

    ``known``: the target's fingerprint over the same columns, already taken (not scanned again).
    """
    if rule not in DATA_RULES:
        return "structure equal to the source's; the rule moves no rows"
    data, recorded = entry.get("data"), entry.get("fingerprint")
    if not data or not recorded:
        return None  # a file without fingerprints (or a table too large for one): apply
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        why = rows_unchanged(
            cur,
            structure.schema or "public",
            structure.name,
            data["columns"],
            structure.primary_key,
            rule,
            RowFingerprint.from_dict(recorded),
            target=known,
        )
    return f"structure equal; {why}" if why else None


LOCKED = "not compared (locked by another session): applied"
_T = TypeVar("_T")


def _lock_timeout() -> str:
    return os.environ.get("MM_LOCK_TIMEOUT", "60s")


def _fix_sequences(
    cur: psycopg.Cursor[Any],
    structure: TableStructure,
    rule: str,
    counts: rules.Counts,
    *,
    execute: bool = True,
) -> None:
    """Move each sequence of the table past the largest id (and past the source's value after a load).

    ``execute=False`` only records the statements it would run (``prepare``'s check).
    """
    schema = structure.schema or "public"
    for seq in structure.sequences:
        if seq.column is None:
            continue
        row = cur.execute(
            "SELECT pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), %s)",
            (schema, structure.name, seq.column),
        ).fetchone()
        seq_name = row[0] if row and row[0] else None
        if seq_name is None:
            seq_name = (
                sql.SQL("{}")
                .format(pg.qualified(seq.schema or schema, seq.name))
                .as_string(cur.connection)
            )
        m = cur.execute(
            sql.SQL("SELECT max({})::bigint FROM {}").format(
                sql.Identifier(seq.column), pg.qualified(schema, structure.name)
            )
        ).fetchone()
        candidates = [m[0] if m else None]
        if rule in DATA_RULES:
            candidates.append(seq.last_value)
        values = [v for v in candidates if v is not None]
        if not values:
            continue
        wanted = max(values)
        # the sequence by its regclass text, never pasted into SQL; NULL: nextval not yet called
        last = cur.execute(
            "SELECT pg_sequence_last_value(%s::regclass), "
            "(SELECT seqstart FROM pg_sequence WHERE seqrelid = %s::regclass)",
            (seq_name, seq_name),
        ).fetchone()
        assert last is not None
        if (last[0] is not None and last[0] >= wanted) or (last[0] is None and last[1] > wanted):
            continue
        query = sql.SQL("SELECT setval({}, {}, true)").format(
            sql.Literal(seq_name), sql.Literal(wanted)
        )
        counts.statements.append(query.as_string(cur.connection))
        if execute:
            cur.execute(query)


def unit_entries(reader: ArchiveReader, unit: Unit) -> dict[str, dict[str, Any]]:
    """What ``apply_unit`` needs of the manifest for ``unit``: its tables' entries (no fingerprint).

    Small enough for XCom: a mapped task then needs no manifest of its own.
    """
    entries = _entries(reader)
    return {
        t: {k: v for k, v in entries[t].items() if k != "fingerprint"}
        for t in unit.tables
        if t in entries
    }


def apply_unit(
    reader: ArchiveReader | None,
    target_dsn: str,
    unit: Unit,
    *,
    allow_drop: bool = False,
    on_sql: Callable[[str], None] | None = None,
    dry_run: bool = False,
    entries: Mapping[str, Mapping[str, Any]] | None = None,
    checked: Collection[str] = (),
    expected: Mapping[str, Mapping[str, Any] | None] | None = None,
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
        entries = _entries(reader)
    missing = [t for t in unit.tables if t not in entries]
    if missing:
        raise ApplyError(
            f"Unit {unit.id} names tables the migration file lacks: {', '.join(missing)}",
            terminal=True,
        )
    structures = {t: TableStructure.from_dict(entries[t]["structure"]) for t in unit.tables}
    rule_of = {t: entries[t]["rule"] for t in unit.tables}
    ddl: dict[str, list[str]] = {t: [] for t in unit.tables}
    kinds: dict[str, list[str]] = {t: [] for t in unit.tables}
    warnings: dict[str, list[str]] = {t: [] for t in unit.tables}
    counts = {t: rules.Counts() for t in unit.tables}
    seconds = dict.fromkeys(unit.tables, 0.0)
    current = unit.tables[0]
    try:
        with pg.sa_connection(target_dsn) as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            conn.exec_driver_sql(
                sql.SQL("SET lock_timeout = {}").format(sql.Literal(_lock_timeout())).as_string(raw)
            )
            # 0. drift guard: the tables are as the plan (and an approval) saw them
            if expected:
                with raw.cursor() as guard:
                    for name in unit.tables:
                        current = name
                        if name in expected:
                            _check_drift(guard, unit, structures[name], expected[name])
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
                e = entries[name]
                s = structures[name]
                targets[name] = rules.Target(
                    schema=s.schema or "public",
                    name=name,
                    columns=tuple(e["data"]["columns"]),
                    key=s.primary_key,
                    rows=int(e["data"]["rows"]),
                    raw_bytes=e["data"].get("raw_bytes"),
                )
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
                if rule_of[name] == OVERWRITE and rules.is_empty(cur, t):
                    direct.add(name)
                else:
                    with reader.data(entries[name]["data"]["member"]) as stream:
                        staged[name] = rules.stage(
                            cur,
                            counts[name],
                            t,
                            stream,
                            f"mm_stage_{zlib.crc32(name.encode()):08x}",
                        )
                seconds[name] += time.monotonic() - t0
            replace: set[str] = set()
            for name in reversed(data_tables):
                current = name
                t0 = time.monotonic()
                t = targets[name]
                if rule_of[name] == OVERWRITE and name in staged:
                    if t.key:
                        rules.delete_missing(cur, counts[name], t, staged[name])
                    elif rules.same_rows(cur, t, staged[name]):
                        counts[name].unchanged = t.rows
                    else:
                        replace.add(name)
                        counts[name].deleted += rules.delete_all(cur, counts[name], t)
                seconds[name] += time.monotonic() - t0
            for name in data_tables:
                current = name
                t0 = time.monotonic()
                t = targets[name]
                c = counts[name]
                rule = rule_of[name]
                if name in direct:
                    assert reader is not None
                    with reader.data(entries[name]["data"]["member"]) as stream:
                        c.inserted += rules.copy_in(cur, c, t.ident, t, stream, f"load {name}")
                    rules.sample_table_keys(cur, c, t, "inserted")
                elif rule == OVERWRITE and not t.key:
                    if name in replace:
                        c.inserted += rules.insert_all(cur, c, t, staged[name])
                elif rule == OVERWRITE and len(unit.tables) == 1:
                    try:
                        with raw.transaction():  # a savepoint
                            rules.upsert(cur, c, t, staged[name], update=True, total=t.rows)
                    except psycopg.errors.UniqueViolation:
                        # rows swapped values of a unique column: updating row by row trips the
                        # constraint midway; replacing the rows gives the same end state
                        log.info("%s: unique values moved between rows; replacing all rows", name)
                        c.deleted += rules.delete_all(cur, c, t)
                        c.inserted += rules.insert_all(cur, c, t, staged[name])
                elif rule in (OVERWRITE, UPSERT):
                    rules.upsert(cur, c, t, staged[name], update=True, total=t.rows)
                elif rule == INSERT_IGNORE:
                    rules.upsert(cur, c, t, staged[name], update=False, total=t.rows)
                seconds[name] += time.monotonic() - t0

            # 3. sequences past the largest id
            for name in unit.tables:
                current = name
                _fix_sequences(cur, structures[name], rule_of[name], counts[name])
            current = unit.tables[-1]
            left: dict[str, RowFingerprint | None] = {}
            if dry_run:
                raw.rollback()  # a preview: the same work as a run, then undone
            else:
                # the fingerprints as this unit leaves its tables (recorded after the run)
                left = fingerprints_of(
                    cur, [(structures[t].schema or "public", t) for t in data_tables]
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


def _check_drift(
    cur: psycopg.Cursor[Any],
    unit: Unit,
    structure: TableStructure,
    expected: Mapping[str, Any] | None,
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
    before = RowFingerprint.from_dict(expected) if expected is not None else None
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


def execute_migration(
    reader: ArchiveReader, target_dsn: str, *, allow_drop: bool = False, workers: int = 1
) -> tuple[ExecutionPlan, list[UnitResult]]:
    """Prepare and apply every unit (no Airflow): for the benchmark and tests.

    Units share no foreign keys, so ``workers`` of them may be applied at once, each in its own
    transaction on its own connection, as the mapped ``apply_table`` tasks of a DAG run do
    (``workers`` plays the pool ``migration_units``). The first failure stops units not yet
    started; those already running finish; the error is raised after them. Results come in the
    plan's order.
    """
    plan = prepare(reader, target_dsn, allow_drop=allow_drop)
    if workers <= 1 or len(plan.units) <= 1:
        return plan, [
            apply_unit(reader, target_dsn, u, allow_drop=allow_drop, checked=plan.checked)
            for u in plan.units
        ]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mm-unit") as pool:
        futures = [
            pool.submit(
                apply_unit, reader, target_dsn, u, allow_drop=allow_drop, checked=plan.checked
            )
            for u in plan.units
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            f.cancel()
    failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return plan, [f.result() for f in futures]
