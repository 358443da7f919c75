"""References across rule boundaries: rows the target keeps that point at rows a rule replaces.

A table whose rows are replaced (``overwrite``) may be referred to by rows the target keeps: a
``schema-only`` or ``skip`` table, or prod-only rows an ``upsert``/``insert-ignore`` leaves. Such
references come from real foreign keys, from relations NocoBase declares in code
(``attachments.storage`` -> ``storages``, see :mod:`migration_manager.nocobase_knowledge`) and
from relation fields in the ``fields`` table. The migration file lists them (``references``).

Two things keep them valid or say they are not:

- *natural keys*: a referred-to table NocoBase identifies by a unique ``name`` (``storages``,
  whose id is a snowflake drawn per install) gets ``natural_key`` in its entry; before the rows
  are applied, staged source rows take the target's key where the name matches
  (:func:`match_natural_keys`), so prod's rows keep their ids and prod's attachments their storage;
- what still dangles is counted by the destructive check (:func:`dangling`), one line per
  relation ("17 prod rows of attachments refer to storages rows this migration removes"), and the
  run treats it as destructive (``on_destructive``).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from migration_manager import pg, row_writes
from migration_manager.archive import ArchiveReader
from migration_manager.manifest import Reference as TableReference
from migration_manager.manifest import Table
from migration_manager.nocobase_knowledge import Knowledge
from migration_manager.schema import TableStructure

log = logging.getLogger(__name__)


def foreign_key_references(structures: Mapping[str, TableStructure]) -> list[TableReference]:
    """Single-column foreign keys between tables of the migration."""
    out = []
    for name, s in structures.items():
        for fk in s.foreign_keys:
            target = fk.referred_table
            if len(fk.columns) == 1 and target in structures:
                out.append(
                    TableReference(
                        table=name,
                        column=fk.columns[0],
                        target=str(target),
                        target_column=fk.referred_columns[0],
                        declared_by=f"foreign key {fk.name or ''}".strip(),
                    )
                )
    return out


def nocobase_references(
    knowledge: Knowledge | None,
    fields: Iterable[tuple[Any, Any, Any, dict[str, Any]]],
    physical: Callable[[str], str],
    column: Callable[[str], str],
    structures: Mapping[str, TableStructure],
) -> list[TableReference]:
    """Relations NocoBase declares: in its code (``knowledge``) and in ``fields`` rows
    (collectionName, name, type, options). An undeclared key is the table's primary key."""
    table_of: dict[str, str] = {}
    if knowledge is not None:
        table_of = {n: c.table for n, c in knowledge.collections.items()}
    found: list[TableReference] = []

    def add(holder: str, fk: str, target: str, key: str, by: str) -> None:
        table, referred = (
            physical(table_of.get(holder, holder)),
            physical(table_of.get(target, target)),
        )
        if table not in structures or referred not in structures:
            return
        pk = structures[referred].primary_key
        if not key and len(pk) != 1:
            return
        ref = TableReference(
            table=table,
            column=column(fk),
            target=referred,
            target_column=column(key) if key else pk[0],
            declared_by=by,
        )
        if all(ref.arrow() != r.arrow() for r in found):  # declared from both sides: once
            found.append(ref)

    for r in knowledge.references if knowledge is not None else ():
        add(r.collection, r.column, r.target, r.target_key, r.declared_by)
    for collection, name, ftype, opts in fields:
        target = opts.get("target")
        if not target:
            continue
        by = f"fields: {collection}.{name}"
        if ftype == "belongsTo" and opts.get("foreignKey"):
            add(str(collection), opts["foreignKey"], target, opts.get("targetKey") or "", by)
        elif ftype in ("hasMany", "hasOne") and opts.get("foreignKey"):
            add(target, opts["foreignKey"], str(collection), opts.get("sourceKey") or "", by)
    return found


def natural_keys(
    knowledge: Knowledge | None,
    physical: Callable[[str], str],
    column: Callable[[str], str],
    structures: Mapping[str, TableStructure],
    references: Iterable[TableReference],
) -> dict[str, tuple[str, ...]]:
    """Tables NocoBase identifies by a unique ``name`` whose key other rows refer to."""
    if knowledge is None:
        return {}
    referred = {(r.target, r.target_column) for r in references}
    out: dict[str, tuple[str, ...]] = {}
    for c in knowledge.collections.values():
        table, name = physical(c.table), column("name")
        s = structures.get(table)
        if s is None or "name" not in c.unique or len(s.primary_key) != 1:
            continue
        if s.primary_key[0] != name and (table, s.primary_key[0]) in referred:
            out[table] = (name,)
    return out


def compared_columns(
    columns: Iterable[str], key: tuple[str, ...], natural: Iterable[str] | None
) -> tuple[list[str], tuple[str, ...]]:
    """The columns and key rows are compared by (fingerprints): without the key, by the natural
    key, for a table matched by natural key (its ids differ between source and target)."""
    if not natural:
        return list(columns), key
    return [c for c in columns if c not in key], tuple(natural)


# -- on the target


def match_natural_keys(
    cur: psycopg.Cursor[Any], t: row_writes.Target, stage: sql.Identifier, natural: Iterable[str]
) -> int:
    """Give staged source rows the target's key where their natural key matches a target row
    (a key no other staged row has). Returns the rows re-keyed."""
    (key,) = t.key
    k = sql.Identifier(key)
    same = sql.SQL(" AND ").join(
        sql.SQL("s.{c} = d.{c}").format(c=sql.Identifier(c)) for c in natural
    )
    cur.execute(
        sql.SQL(
            "UPDATE {stage} AS s SET {k} = d.{k} FROM {target} AS d WHERE {same} "
            "AND s.{k} IS DISTINCT FROM d.{k} "
            "AND NOT EXISTS (SELECT 1 FROM {stage} AS o WHERE o.{k} = d.{k})"
        ).format(stage=stage, k=k, target=t.ident, same=same)
    )
    return max(cur.rowcount, 0)


class DanglingReference(BaseModel):
    """Target rows of ``reference.table`` that would point at rows the migration removes."""

    model_config = ConfigDict(frozen=True)

    reference: TableReference
    rows: int

    def describe(self) -> str:
        r = self.reference
        return (
            f"{self.rows} prod row{'s' if self.rows != 1 else ''} of {r.table} refer to {r.target} "
            f"rows this migration removes ({r.arrow()}; {r.declared_by})"
        )


def table_exists(cur: psycopg.Cursor[Any], schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists (one catalog lookup, no lock taken)."""
    row = cur.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (schema, table)
    ).fetchone()
    return bool(row and row[0])


def dangling(
    cur: psycopg.Cursor[Any],
    reader: ArchiveReader,
    entry: Table,
    references: Iterable[TableReference],
) -> list[DanglingReference]:
    """For one overwritten table: per reference into it from a table the target has, the target
    rows that keep pointing at target rows the source lacks (after natural-key matching).
    Leaves nothing behind."""
    target, data = row_writes.Target.of(entry), entry.data
    if target is None or data is None:
        return []
    refs = [
        r
        for r in references
        if r.target == entry.name and table_exists(cur, target.schema, r.table)
    ]
    if not refs or not table_exists(cur, target.schema, entry.name):
        return []
    out = []
    name = f"mm_refs_{zlib.crc32(target.name.encode()):08x}"
    with reader.data(data.member) as stream:
        stage = row_writes.stage(cur, row_writes.Counts(), target, stream, name)
    if entry.natural_key and len(target.key) == 1:
        match_natural_keys(cur, target, stage, entry.natural_key)
    for r in refs:
        holder = pg.qualified(target.schema, r.table)
        query = sql.SQL(
            "SELECT count(*) FROM {holder} AS h JOIN {target} AS d "
            "ON h.{c}::text = d.{tc}::text WHERE NOT EXISTS "
            "(SELECT 1 FROM {stage} AS s WHERE s.{tc}::text = d.{tc}::text)"
        ).format(
            holder=holder,
            target=target.ident,
            c=sql.Identifier(r.column),
            tc=sql.Identifier(r.target_column),
            stage=stage,
        )
        try:
            with cur.connection.transaction():  # a savepoint: a column prod lacks skips this one
                found = cur.execute(query).fetchone()
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as exc:
            log.info("%s: not counted (%s)", r.arrow(), str(exc).splitlines()[0])
            continue
        if found and found[0]:
            out.append(DanglingReference(reference=r, rows=int(found[0])))
    cur.execute(sql.SQL("DROP TABLE {}").format(stage))
    return out
