"""What the plan reads of the target: its tables' structure and fingerprints, its types.

Reads that meet a table another session holds locked give up after ``MM_PLAN_LOCK_TIMEOUT``
(:func:`without_waiting`) instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

import psycopg
import sqlalchemy as sa
from psycopg import sql

from migration_manager import pg
from migration_manager.prod_edits import TooLarge, current_fingerprint
from migration_manager.schema import (
    TableStructure,
    TypeStructure,
    domain_definition,
    find_type,
    list_tables,
    reflect_tables,
    type_name,
)

_T = TypeVar("_T")


def reflect_target(
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
            out.update(without_waiting(conn, partial(reflect_tables, conn, schema, wanted)))
        except Locked:  # one of them is locked: find which, reflect the others
            for name in wanted:
                try:
                    out.update(without_waiting(conn, partial(reflect_tables, conn, schema, [name])))
                except Locked:
                    locked.add(name)
    return out, locked


class Locked(Exception):
    """A table the plan reads is locked by another session (``MM_PLAN_LOCK_TIMEOUT``)."""


def without_waiting(conn: sa.Connection, read: Callable[[], _T]) -> _T:
    """``read()`` in a savepoint that waits at most ``MM_PLAN_LOCK_TIMEOUT`` for a lock."""
    try:
        with conn.begin_nested():
            pg.run_composed(
                conn,
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(pg.plan_lock_timeout())),
            )
            return read()
    except (psycopg.errors.LockNotAvailable, sa.exc.OperationalError) as exc:
        if isinstance(getattr(exc, "orig", exc), psycopg.errors.LockNotAvailable):
            raise Locked(str(exc)) from exc
        raise


def same_structure(source: TableStructure, target: TableStructure) -> bool:
    """The target reflects to exactly the source's structure: the comparison would find nothing.

    The cheap first look of ``prepare`` (one reflection of every table instead of a comparison
    per table); anything that differs at all goes through :func:`diff_table`.
    """
    return source.without_positions() == target.without_positions()


def check_types(
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
                f"{names}: the source's {source.kind} type {type_name(source)} is a {target.kind} "
                f"type in the target; rename or drop the target's {type_name(source)}, then run "
                "the migration again"
            )
        elif source.kind == "enum":
            lacking = [label for label in source.labels if label not in target.labels]
            if lacking:
                literals = [sql.Literal(label).as_string(None).strip() for label in lacking]
                labels = ", ".join(literals)
                add = "; ".join(
                    sql.SQL("ALTER TYPE {} ADD VALUE {}")
                    .format(sql.SQL(type_name(source)), sql.SQL(literal))
                    .as_string(None)
                    for literal in literals
                )
                problems.append(
                    f"{names}: the target's enum type {type_name(source)} lacks the label(s) "
                    f"{labels} of the source's; add them on the target first ({add};), "
                    "then run the migration again"
                )
            elif [label for label in target.labels if label in source.labels] != list(
                source.labels
            ):
                warnings.append(
                    f"{names}: the target's enum type {type_name(source)} orders its labels "
                    f"otherwise ({', '.join(target.labels)}) than the source's "
                    f"({', '.join(source.labels)}); sorting by it follows the target's order"
                )
        elif source.kind == "domain" and domain_definition(
            target, default_schema
        ) != domain_definition(source, default_schema):
            warnings.append(
                f"{names}: the target's domain {type_name(source)} is defined otherwise than the "
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
    parts.extend(c.definition for c in t.checks)
    return " ".join(parts)


_TOO_LARGE = object()


def target_fingerprint(conn: sa.Connection, structure: TableStructure) -> object:
    """The table's fingerprint on the target (prod_edits.current_fingerprint), or _TOO_LARGE."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        try:
            return current_fingerprint(cur, structure.schema or "public", structure.name)
        except TooLarge:
            return _TOO_LARGE
