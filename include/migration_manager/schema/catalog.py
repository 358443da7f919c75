"""Catalog queries: reflect a schema's tables into :class:`TableStructure` values, find types.

One pass per kind of object over every table asked for (SQLAlchemy's multi-table reflection,
plus the catalog's own texts for types and defaults); rows are read by column name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from migration_manager.schema.sqltext import NEXTVAL, seq_name
from migration_manager.schema.structure import SORTING
from migration_manager.table_structure import (
    CheckConstraint,
    ColumnStructure,
    ForeignKeyStructure,
    IndexStructure,
    Option,
    SequenceStructure,
    TableStructure,
    TypeCheck,
    TypeStructure,
    UniqueConstraint,
)

# A column's own type, NOT NULL and default as the catalog has them. SQLAlchemy's reflection
# lends a column of a domain the domain's default and NOT NULL; the column itself has neither.
# Only the tables asked for: pg_get_expr() opens its table, so it waits for a table another
# session holds locked.
_FORMAT_TYPES = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type_text, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = :schema AND c.relname = ANY(:names) AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
"""

_COLUMN_FACTS = """
SELECT a.attname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid) AS default_text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = COALESCE(:schema, current_schema()) AND c.relname = :name
  AND a.attnum > 0 AND NOT a.attisdropped
"""

_SEQUENCES = """
SELECT s.schemaname, s.sequencename, s.data_type::text AS data_type, s.start_value,
       s.increment_by, s.min_value, s.max_value, s.cache_size, s.cycle, s.last_value,
       t.relname AS table_name, a.attname AS column_name, d.deptype
FROM pg_sequences s
JOIN pg_namespace sn ON sn.nspname = s.schemaname
JOIN pg_class sc ON sc.relname = s.sequencename AND sc.relnamespace = sn.oid
LEFT JOIN pg_depend d ON d.objid = sc.oid AND d.classid = 'pg_class'::regclass
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE s.schemaname = :schema
"""


# Every type a column's type is built on: a domain's base type, an array's element type, and so
# on down (a domain over an array of an enum reaches the enum); depth counts the steps.
_REACH = """
WITH RECURSIVE reach(relname, oid, depth) AS (
    SELECT c.relname, a.atttypid, 0
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  UNION
    SELECT r.relname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, r.depth + 1
    FROM reach r JOIN pg_type t ON t.oid = r.oid
    WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0)
)
"""

_TYPE_COLUMNS = """
n.nspname, t.typname, t.typtype::text AS typtype,
CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
t.typnotnull, t.typdefault,
ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
    AS labels,
ARRAY(SELECT k.conname::text FROM pg_constraint k
      WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname) AS check_names,
ARRAY(SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k
      WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname) AS check_defs
"""

# Per table, the enums and domains its columns use; a type after the ones it is built on (a
# type's greatest depth is greater than that of every type built on it).
_USER_TYPES = (
    _REACH
    + "SELECT r.relname, max(r.depth) AS depth, "
    + _TYPE_COLUMNS
    + """
FROM reach r
JOIN pg_type t ON t.oid = r.oid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY r.relname, t.oid, n.oid
ORDER BY r.relname, depth DESC, n.nspname, t.typname
"""
)

_TYPE_KINDS = {
    "e": "enum",
    "d": "domain",
    "c": "composite",
    "b": "base",
    "r": "range",
    "m": "multirange",
    "p": "pseudo",
}


def _type_from_row(row: Any) -> TypeStructure:
    """A :class:`TypeStructure` from the :data:`_TYPE_COLUMNS` of one row (read by name)."""
    kind = _TYPE_KINDS.get(row.typtype, row.typtype)
    return TypeStructure(
        schema=row.nspname,
        name=row.typname,
        kind=kind,
        labels=tuple(row.labels or ()),
        base_type=row.base_type,
        not_null=bool(row.typnotnull) if kind == "domain" else False,
        default=row.typdefault if kind == "domain" else None,
        checks=tuple(
            TypeCheck(name=n, definition=d)
            for n, d in zip(row.check_names or (), row.check_defs or (), strict=True)
        ),
    )


_FIND_TYPE = (
    "SELECT "
    + _TYPE_COLUMNS
    + "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    + "WHERE n.nspname = :schema AND t.typname = :name"
)


def find_type(conn: sa.Connection, schema: str, name: str) -> TypeStructure | None:
    """The type named ``schema.name`` in ``conn``'s database, of whatever kind; None if absent."""
    row = conn.execute(sa.text(_FIND_TYPE), {"schema": schema, "name": name}).first()
    return _type_from_row(row) if row is not None else None


def column_facts(
    conn: sa.Connection, schema: str | None, name: str
) -> dict[str, tuple[bool, str | None]]:
    """Per column of the table: its own NOT NULL and default as the catalog has them."""
    return {
        r.attname: (bool(r.attnotnull), r.default_text)
        for r in conn.execute(sa.text(_COLUMN_FACTS), {"schema": schema, "name": name})
    }


def list_tables(conn: sa.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        ),
        {"schema": schema},
    )
    return [r.relname for r in rows]


def estimated_rows(conn: sa.Connection, schema: str) -> dict[str, int]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, GREATEST(c.reltuples, 0)::bigint AS estimate FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
        ),
        {"schema": schema},
    )
    return {r.relname: int(r.estimate) for r in rows}


# a table never analysed (reltuples -1, e.g. in a freshly loaded database) is counted exactly
# when it is this small; at most COUNT_BUDGET_BYTES are counted in all
SMALL_TABLE_BYTES = 8 << 20
COUNT_BUDGET_BYTES = 64 << 20


def row_counts(conn: sa.Connection, schema: str) -> dict[str, int | None]:
    """Each table's rows for a person to read: the planner's estimate of an analysed table; for
    one never analysed (``reltuples`` -1) an exact ``count(*)`` when it is small
    (``pg_relation_size`` up to :data:`SMALL_TABLE_BYTES`, :data:`COUNT_BUDGET_BYTES` in all),
    else None: unknown (not 0)."""
    found = conn.execute(
        sa.text(
            "SELECT c.relname, c.relkind, c.reltuples::bigint AS estimate, "
            "pg_relation_size(c.oid) AS bytes FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') ORDER BY bytes, 1"
        ),
        {"schema": schema},
    ).all()
    out: dict[str, int | None] = {}
    budget = COUNT_BUDGET_BYTES
    for r in found:
        if r.estimate >= 0:
            out[r.relname] = int(r.estimate)
        elif r.relkind == "r" and r.bytes <= min(SMALL_TABLE_BYTES, budget):
            budget -= r.bytes
            counted = sa.select(sa.func.count()).select_from(sa.table(r.relname, schema=schema))
            out[r.relname] = int(conn.execute(counted).scalar_one())
        else:
            out[r.relname] = None
    return out


_IDENTITY_OPTIONS = ("always", "start", "increment", "minvalue", "maxvalue", "cycle", "cache")


def reflect_tables(
    conn: sa.Connection, schema: str, names: Iterable[str]
) -> dict[str, TableStructure]:
    """Reflect ``names`` in ``schema`` in one pass per kind of object (fast on 100+ tables)."""
    names = list(names)
    if not names:
        return {}
    insp = sa.inspect(conn)
    cols = insp.get_multi_columns(schema=schema, filter_names=names)
    pks = insp.get_multi_pk_constraint(schema=schema, filter_names=names)
    uniques = insp.get_multi_unique_constraints(schema=schema, filter_names=names)
    indexes = insp.get_multi_indexes(schema=schema, filter_names=names)
    fks = insp.get_multi_foreign_keys(schema=schema, filter_names=names)
    checks = insp.get_multi_check_constraints(schema=schema, filter_names=names)
    comments = insp.get_multi_table_comment(schema=schema, filter_names=names)
    catalog: dict[tuple[str, str], tuple[str, bool, str | None]] = {
        (r.relname, r.attname): (r.type_text, bool(r.attnotnull), r.default_text)
        for r in conn.execute(sa.text(_FORMAT_TYPES), {"schema": schema, "names": names})
    }
    seq_rows = list(conn.execute(sa.text(_SEQUENCES), {"schema": schema}))
    user_types: dict[str, list[TypeStructure]] = {}
    for r in conn.execute(sa.text(_USER_TYPES), {"schema": schema}):
        user_types.setdefault(r.relname, []).append(_type_from_row(r))
    by_seq = {r.sequencename: r for r in seq_rows}

    out: dict[str, TableStructure] = {}
    for name in names:
        key = (schema, name)
        columns = []
        wanted_seqs: dict[str, str | None] = {}
        for c in cols.get(key, []):
            identity: dict[str, int | bool | str] | None = None
            if c.get("identity"):
                ident = c["identity"]
                # the options an identity column has, by SQLAlchemy's names (Identity(**...))
                found = [(k, ident.get(k)) for k in _IDENTITY_OPTIONS]
                identity = {k: v for k, v in found if isinstance(v, (int, bool, str))}
            computed = c["computed"]["sqltext"] if c.get("computed") else None
            type_text_, not_null, default = catalog[(name, c["name"])]
            columns.append(
                ColumnStructure(
                    name=c["name"],
                    type=type_text_,
                    nullable=not not_null,
                    default=None if identity is not None or computed is not None else default,
                    identity=identity,
                    computed=computed,
                    comment=c.get("comment"),
                )
            )
            if default:
                m = NEXTVAL.search(default)
                if m:
                    wanted_seqs[seq_name(m.group(1))[1]] = c["name"]
        for r in seq_rows:
            if r.table_name == name and r.column_name is not None:
                wanted_seqs.setdefault(r.sequencename, r.column_name)
        sequences = []
        for wanted, col in sorted(wanted_seqs.items()):
            seq_row = by_seq.get(wanted)
            if seq_row is None:
                continue
            r = seq_row
            sequences.append(
                SequenceStructure(
                    name=r.sequencename,
                    schema=r.schemaname,
                    column=col,
                    data_type=r.data_type,
                    start=int(r.start_value),
                    increment=int(r.increment_by),
                    min_value=int(r.min_value),
                    max_value=int(r.max_value),
                    cache=int(r.cache_size),
                    cycle=bool(r.cycle),
                    last_value=None if r.last_value is None else int(r.last_value),
                    identity=r.deptype == "i",
                )
            )
        pk = pks.get(key)
        out[name] = TableStructure(
            name=name,
            schema=schema,
            columns=tuple(columns),
            primary_key=tuple(pk["constrained_columns"]) if pk else (),
            primary_key_name=pk.get("name") if pk else None,
            unique_constraints=tuple(
                UniqueConstraint(name=u["name"], columns=tuple(u["column_names"]))
                for u in uniques.get(key, [])
            ),
            indexes=tuple(
                IndexStructure.model_validate(
                    {
                        "name": i["name"],
                        "unique": bool(i["unique"]),
                        "columns": i["column_names"],
                        "expressions": i.get("expressions") or None,
                        "column_sorting": {
                            k: [m for m in v if m in SORTING]
                            for k, v in (i.get("column_sorting") or {}).items()
                        }
                        or None,
                        "dialect_options": _plain(i.get("dialect_options") or {}),
                    }
                )
                for i in indexes.get(key, [])
                if not i.get("duplicates_constraint")
            ),
            foreign_keys=tuple(
                ForeignKeyStructure(
                    name=f["name"],
                    columns=tuple(f["constrained_columns"]),
                    referred_schema=f.get("referred_schema"),
                    referred_table=f["referred_table"],
                    referred_columns=tuple(f["referred_columns"]),
                    options=_plain(f.get("options") or {}),
                )
                for f in fks.get(key, [])
            ),
            check_constraints=tuple(
                CheckConstraint(name=c["name"], sqltext=c["sqltext"]) for c in checks.get(key, [])
            ),
            sequences=tuple(sequences),
            comment=_comment(comments.get(key)),
            types=tuple(user_types.get(name, ())),
        )
    return out


def _comment(c: Any) -> str | None:
    text = (c or {}).get("text")
    return str(text) if text is not None else None


def _plain(d: Mapping[str, object]) -> dict[str, Option]:
    """JSON-safe copy of reflection options (SQLAlchemy may return clause objects or tuples)."""
    out: dict[str, Option] = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple)):
            out[k] = [str(x) for x in v]
        elif v is None or isinstance(v, (str, int, bool, float)):
            out[k] = v
        else:
            out[k] = str(v)
    return out
