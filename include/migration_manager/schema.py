"""Table structure: reflect it from the source, carry it in the migration file, sync the target.

The structure travels as plain JSON (:class:`TableStructure`): column types as PostgreSQL's
own ``format_type()`` text, defaults as ``pg_get_expr()`` text. On the target it becomes a
SQLAlchemy ``Table`` again, and Alembic's autogenerate comparison says what differs; Alembic's
operations then write the DDL. No hand-written differ.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import UserDefinedType

from migration_manager import pg
from migration_manager.errors import ApplyError

# Alembic is imported where a structure is compared or changed: a unit whose structure the
# plan found equal never loads it (one import less at the start of every apply_table).
if TYPE_CHECKING:
    from alembic.operations import ops as alembic_ops
    from alembic.runtime.migration import MigrationContext
    from alembic.util import PriorityDispatchResult

log = logging.getLogger(__name__)
for _noisy in ("alembic.runtime.migration", "alembic.runtime.plugins", "alembic.ddl.postgresql"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

_DIALECT = postgresql.dialect()
_ARGS = re.compile(r"\(([^)]*)\)")
# the sequence's name is a SQL literal inside: quotes in it are doubled (nextval('"it''s_seq"'...))
_NEXTVAL = re.compile(r"nextval\('((?:[^']|'')+)'::regclass\)")


# --------------------------------------------------------------------------- types


class RawType(UserDefinedType[Any]):
    """A type SQLAlchemy does not know (an enum, a domain, an extension type): kept as text."""

    cache_ok = True

    def __init__(self, text: str):
        self.text = text

    def get_col_spec(self, **kw: Any) -> str:
        return self.text


def type_from_text(text: str) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy type for a ``format_type()`` text such as ``character varying(255)[]``."""
    base = text.strip()
    dims = 0
    while base.endswith("[]"):
        dims += 1
        base = base[:-2]
    match = _ARGS.search(base)
    args = [a.strip() for a in match.group(1).split(",")] if match else []
    name = _ARGS.sub("", base).strip()
    kind = postgresql.base.ischema_names.get(name)
    result: sa.types.TypeEngine[Any]
    try:
        if name in ("timestamp with time zone", "time with time zone"):
            assert kind is not None
            result = kind(timezone=True, precision=int(args[0]) if args else None)
        elif name in ("timestamp without time zone", "time without time zone"):
            assert kind is not None
            result = kind(timezone=False, precision=int(args[0]) if args else None)
        elif name == "double precision":
            result = postgresql.DOUBLE_PRECISION()
        elif name == "numeric":
            nums = [int(a) for a in args]
            result = sa.Numeric(nums[0] if nums else None, nums[1] if len(nums) > 1 else None)
        elif name == "bit varying":
            # ischema_names maps it to BIT, which without varying=True would be bit(n)
            result = postgresql.BIT(int(args[0]) if args else None, varying=True)
        elif name.startswith("interval"):
            fields = name[len("interval") :].strip() or None
            result = postgresql.INTERVAL(fields=fields, precision=int(args[0]) if args else None)
        elif kind is None:
            result = RawType(base)
        elif args:
            result = kind(*(int(a) for a in args))
        else:
            result = kind()
    except (TypeError, ValueError):
        result = RawType(base)
    if dims:
        # SQLAlchemy refuses nested ARRAYs; one ARRAY carries the dimensions
        result = postgresql.ARRAY(result, dimensions=dims if dims > 1 else None)
    return result


def _default_clause(text: str | None) -> sa.TextClause | None:
    """A server default as SQL text; colons escaped so ``{"a":1}`` is not read as a bind parameter."""
    if text is None:
        return None
    return sa.text(re.sub(r"(?<!\\):", r"\\:", text))


def type_text(type_: sa.types.TypeEngine[Any]) -> str:
    return str(type_.compile(dialect=_DIALECT))


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class ColumnStructure:
    name: str
    type: str
    nullable: bool
    default: str | None = None
    identity: dict[str, Any] | None = None
    computed: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class SequenceStructure:
    name: str
    schema: str | None
    column: str | None
    data_type: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cache: int
    cycle: bool
    last_value: int | None
    identity: bool = False


@dataclass(frozen=True)
class TypeStructure:
    """A user-defined enum or domain type that a table's columns use.

    Used directly, as the element of an array or as the base of a domain (a domain over an
    enum lists the enum too). A table's ``types`` are in dependency order: a type comes after
    the types it is built on, so creating them in that order always works.
    """

    schema: str
    name: str
    kind: str  # "enum" or "domain" (find_type may meet a target type of another kind)
    labels: tuple[str, ...] = ()  # enum: its labels in sort order (pg_enum.enumsortorder)
    base_type: str | None = None  # domain: format_type() text of the base type
    not_null: bool = False  # domain
    default: str | None = None  # domain: pg_type.typdefault
    checks: tuple[dict[str, str], ...] = ()  # domain: {"name", "definition"}, by name

    @property
    def qualified(self) -> str:
        """The type's name as SQL, schema-qualified, quoted where needed: ``public."Mood"``."""
        return _quoted(self.schema, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "kind": self.kind,
            "labels": list(self.labels),
            "base_type": self.base_type,
            "not_null": self.not_null,
            "default": self.default,
            "checks": [dict(c) for c in self.checks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TypeStructure:
        return cls(
            schema=d["schema"],
            name=d["name"],
            kind=d["kind"],
            labels=tuple(d.get("labels") or ()),
            base_type=d.get("base_type"),
            not_null=bool(d.get("not_null")),
            default=d.get("default"),
            checks=tuple(dict(c) for c in d.get("checks") or ()),
        )

    def domain_definition(self, default_schema: str | None = None) -> tuple[Any, ...]:
        """What makes two domains alike (constraint names aside).

        Texts from catalogs name a type of ``default_schema`` with or without its schema,
        depending on the session's search path; the schema is left out here.
        """

        def plain(text: str | None) -> str | None:
            if text is None or not default_schema:
                return text
            prep = _DIALECT.identifier_preparer
            for prefix in {f"{prep.quote_schema(default_schema)}.", f'"{default_schema}".'}:
                text = re.sub(rf"(?<![\w.\"]){re.escape(prefix)}", "", text)
            return text

        return (
            plain(self.base_type),
            self.not_null,
            plain(self.default),
            tuple(sorted(plain(_valid_check(c["definition"])) or "" for c in self.checks)),
        )

    def create_sql(self, context: psycopg.Connection[Any] | None = None) -> str:
        """``CREATE TYPE ... AS ENUM`` or ``CREATE DOMAIN``; labels quoted as literals for ``context``."""
        if self.kind == "enum":
            labels = ", ".join(sql.Literal(label).as_string(context) for label in self.labels)
            return f"CREATE TYPE {self.qualified} AS ENUM ({labels})"
        parts = [f"CREATE DOMAIN {self.qualified} AS {self.base_type}"]
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.not_null:
            parts.append("NOT NULL")
        prep = _DIALECT.identifier_preparer
        for check in self.checks:
            parts.append(
                f"CONSTRAINT {prep.quote(check['name'])} {_valid_check(check['definition'])}"
            )
        return " ".join(parts)


def _valid_check(definition: str) -> str:
    """A domain CHECK as CREATE DOMAIN takes it: ``NOT VALID`` exists only for ALTER DOMAIN."""
    return definition.removesuffix(" NOT VALID")


@dataclass(frozen=True)
class TableStructure:
    """Everything needed to create the table anywhere and to compare it with a target's."""

    name: str
    schema: str | None
    columns: tuple[ColumnStructure, ...]
    primary_key: tuple[str, ...] = ()
    primary_key_name: str | None = None
    unique_constraints: tuple[dict[str, Any], ...] = ()
    indexes: tuple[dict[str, Any], ...] = ()
    foreign_keys: tuple[dict[str, Any], ...] = ()
    check_constraints: tuple[dict[str, Any], ...] = ()
    sequences: tuple[SequenceStructure, ...] = ()
    comment: str | None = None
    types: tuple[TypeStructure, ...] = ()  # enums and domains the columns use, dependencies first

    # -- derived facts

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Columns that carry data (generated columns are computed by the target)."""
        return tuple(c.name for c in self.columns if c.computed is None)

    def column(self, name: str) -> ColumnStructure:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def auto_increment_columns(self) -> tuple[str, ...]:
        """Key columns filled by a sequence: serial, identity, or a ``nextval`` default."""
        out = []
        for name in self.primary_key:
            col = self.column(name)
            if col.identity is not None or (col.default and "nextval(" in col.default):
                out.append(name)
        return tuple(out)

    @property
    def key_kind(self) -> str:
        if not self.primary_key:
            return "none"
        if len(self.primary_key) > 1:
            return "composite"
        col = self.column(self.primary_key[0])
        if col.identity is not None:
            return "identity"
        if col.default and "nextval(" in col.default:
            return "serial"
        t = col.type.lower()
        if t == "uuid":
            return "uuid"
        if t.startswith(("character", "text", "varchar")):
            return "string"
        if t in ("bigint", "integer", "smallint"):
            return "integer"
        return "other"

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": self.schema,
            "columns": [c.__dict__.copy() for c in self.columns],
            "primary_key": list(self.primary_key),
            "primary_key_name": self.primary_key_name,
            "unique_constraints": [dict(u) for u in self.unique_constraints],
            "indexes": [dict(i) for i in self.indexes],
            "foreign_keys": [dict(f) for f in self.foreign_keys],
            "check_constraints": [dict(c) for c in self.check_constraints],
            "sequences": [s.__dict__.copy() for s in self.sequences],
            "comment": self.comment,
            "types": [t.to_dict() for t in self.types],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableStructure:
        return cls(
            name=d["name"],
            schema=d.get("schema"),
            columns=tuple(ColumnStructure(**c) for c in d["columns"]),
            primary_key=tuple(d.get("primary_key") or ()),
            primary_key_name=d.get("primary_key_name"),
            unique_constraints=tuple(d.get("unique_constraints") or ()),
            indexes=tuple(d.get("indexes") or ()),
            foreign_keys=tuple(d.get("foreign_keys") or ()),
            check_constraints=tuple(d.get("check_constraints") or ()),
            sequences=tuple(SequenceStructure(**s) for s in d.get("sequences") or ()),
            comment=d.get("comment"),
            # files written before types were recorded have none: read as "uses no such type"
            types=tuple(TypeStructure.from_dict(t) for t in d.get("types") or ()),
        )

    # -- SQLAlchemy

    def to_table(self, metadata: sa.MetaData) -> sa.Table:
        columns: list[sa.Column[Any]] = []
        for c in self.columns:
            args: list[Any] = []
            if c.identity is not None:
                args.append(sa.Identity(**c.identity))
            if c.computed is not None:
                args.append(sa.Computed(sa.text(c.computed), persisted=True))
            columns.append(
                sa.Column(
                    c.name,
                    type_from_text(c.type),
                    *args,
                    nullable=c.nullable,
                    server_default=_default_clause(c.default) if c.identity is None else None,
                    comment=c.comment,
                    # never SERIAL (the sequence travels as a default); SQLAlchemy refuses
                    # autoincrement=False next to an Identity, which renders its own clause
                    autoincrement="auto" if c.identity is not None else False,
                )
            )
        constraints: list[Any] = []
        if self.primary_key:
            constraints.append(
                sa.PrimaryKeyConstraint(*self.primary_key, name=self.primary_key_name)
            )
        for u in self.unique_constraints:
            constraints.append(sa.UniqueConstraint(*u["columns"], name=u["name"]))
        for ck in self.check_constraints:
            constraints.append(sa.CheckConstraint(sa.text(ck["sqltext"]), name=ck["name"]))
        table = sa.Table(
            self.name, metadata, *columns, *constraints, schema=self.schema, comment=self.comment
        )
        for f in self.foreign_keys:
            # Column objects, never "schema.table.column" strings: a name may hold dots
            referred = _referred_table(metadata, table, f)
            table.append_constraint(
                sa.ForeignKeyConstraint(
                    f["columns"],
                    [referred.c[rc] for rc in f["referred_columns"]],
                    name=f["name"],
                    **{
                        k: v
                        for k, v in (f.get("options") or {}).items()
                        if k in ("onupdate", "ondelete", "deferrable", "initially")
                    },
                )
            )
        for ix in self.indexes:
            elements: list[Any] = []
            exprs = ix.get("expressions") or []
            sorting = ix.get("column_sorting") or {}
            for i, col in enumerate(ix["columns"]):
                element: Any
                if col is not None:
                    element = table.c[col]
                elif i < len(exprs):
                    element = sa.text(exprs[i])
                else:
                    continue
                key = col if col is not None else exprs[i]
                for modifier in sorting.get(key) or ():
                    # DESC, NULLS FIRST / LAST, in the order reflection reports them
                    element = _SORTING[modifier](element)
                elements.append(element)
            kwargs = {
                k: v
                for k, v in (ix.get("dialect_options") or {}).items()
                if v not in (None, [], "btree")
            }
            if "postgresql_where" in kwargs:
                kwargs["postgresql_where"] = sa.text(kwargs["postgresql_where"])
            index = sa.Index(ix["name"], *elements, unique=ix.get("unique", False), **kwargs)
            if index.table is None:
                # only expressions (lower(email)): no column ties the index to its table
                table.append_constraint(index)
        return table


_SORTING: dict[str, Callable[[Any], Any]] = {
    "asc": sa.asc,
    "desc": sa.desc,
    "nulls_first": sa.nulls_first,
    "nulls_last": sa.nulls_last,
}


def _referred_table(metadata: sa.MetaData, table: sa.Table, fk: dict[str, Any]) -> sa.Table:
    """The table a foreign key refers to: ``table`` itself, or a stub holding the referred columns.

    A stub is enough for the constraint's DDL and for Alembic's comparison (it only reads the
    referred table's name, schema and column names).
    """
    schema, name = fk.get("referred_schema"), fk["referred_table"]
    if (schema, name) == (table.schema, table.name):
        return table
    found = next(
        (t for t in metadata.tables.values() if (t.schema, t.name) == (schema, name)), None
    )
    if found is None:
        found = sa.Table(name, metadata, schema=schema)
    for rc in fk["referred_columns"]:
        if rc not in found.c:
            found.append_column(sa.Column(rc, sa.Integer))
    return found


# --------------------------------------------------------------------------- reflection


# A column's own type, NOT NULL and default as the catalog has them. SQLAlchemy's reflection
# lends a column of a domain the domain's default and NOT NULL; the column itself has neither.
# Only the tables asked for: pg_get_expr() opens its table, so it waits for a table another
# session holds locked.
_FORMAT_TYPES = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = :schema AND c.relname = ANY(:names) AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
"""

_COLUMN_FACTS = """
SELECT a.attname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = COALESCE(:schema, current_schema()) AND c.relname = :name
  AND a.attnum > 0 AND NOT a.attisdropped
"""

_SEQUENCES = """
SELECT s.schemaname, s.sequencename, s.data_type::text, s.start_value, s.increment_by, s.min_value,
       s.max_value, s.cache_size, s.cycle, s.last_value, t.relname, a.attname, d.deptype
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
n.nspname, t.typname, t.typtype::text,
CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
t.typnotnull, t.typdefault,
ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
ARRAY(SELECT k.conname::text FROM pg_constraint k
      WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname),
ARRAY(SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k
      WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname)
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


def _type_from_row(row: Sequence[Any]) -> TypeStructure:
    """A :class:`TypeStructure` from the :data:`_TYPE_COLUMNS` of one row."""
    schema, name, typtype, base_type, not_null, default, labels, check_names, check_defs = row
    kind = _TYPE_KINDS.get(typtype, typtype)
    return TypeStructure(
        schema=schema,
        name=name,
        kind=kind,
        labels=tuple(labels or ()),
        base_type=base_type,
        not_null=bool(not_null) if kind == "domain" else False,
        default=default if kind == "domain" else None,
        checks=tuple(
            {"name": n, "definition": d}
            for n, d in zip(check_names or (), check_defs or (), strict=True)
        ),
    )


def find_type(conn: sa.Connection, schema: str, name: str) -> TypeStructure | None:
    """The type named ``schema.name`` in ``conn``'s database, of whatever kind; None if absent."""
    row = conn.execute(
        sa.text(
            f"SELECT {_TYPE_COLUMNS} FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = :schema AND t.typname = :name"
        ),
        {"schema": schema, "name": name},
    ).first()
    return _type_from_row(row) if row is not None else None


def list_tables(conn: sa.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        ),
        {"schema": schema},
    )
    return [r[0] for r in rows]


def estimated_rows(conn: sa.Connection, schema: str) -> dict[str, int]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, GREATEST(c.reltuples, 0)::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
        ),
        {"schema": schema},
    )
    return {r[0]: int(r[1]) for r in rows}


def _seq_name(text: str) -> tuple[str | None, str]:
    """The sequence named inside ``nextval('...')``, as the literal's text (quotes doubled).

    ``public."a_id_seq"`` -> ("public", "a_id_seq"); ``"it''s_id_seq"`` -> (None, "it's_id_seq");
    ``"a.b"."c""d"`` -> ("a.b", 'c"d'). Dots inside double quotes belong to the name.
    """
    text = text.replace("''", "'")
    parts = [
        quoted.replace('""', '"') if quoted else plain
        for quoted, plain in re.findall(r'"((?:[^"]|"")*)"|([^".]+)', text)
    ]
    if len(parts) == 2:
        return parts[0], parts[1]
    return None, parts[-1]


def reflect_tables(
    conn: sa.Connection, schema: str, names: Iterable[str]
) -> dict[str, TableStructure]:
    """Reflect ``names`` in ``schema`` in one pass per kind of object (fast on 100+ tables)."""
    names = list(names)
    if not names:
        return {}
    insp = sa.inspect(conn)
    kw: dict[str, Any] = {"schema": schema, "filter_names": names}
    cols = insp.get_multi_columns(**kw)
    pks = insp.get_multi_pk_constraint(**kw)
    uniques = insp.get_multi_unique_constraints(**kw)
    indexes = insp.get_multi_indexes(**kw)
    fks = insp.get_multi_foreign_keys(**kw)
    checks = insp.get_multi_check_constraints(**kw)
    comments = insp.get_multi_table_comment(**kw)
    catalog: dict[tuple[str, str], tuple[str, bool, str | None]] = {
        (r[0], r[1]): (r[2], bool(r[3]), r[4])
        for r in conn.execute(sa.text(_FORMAT_TYPES), {"schema": schema, "names": names})
    }
    seq_rows = list(conn.execute(sa.text(_SEQUENCES), {"schema": schema}))
    user_types: dict[str, list[TypeStructure]] = {}
    for r in conn.execute(sa.text(_USER_TYPES), {"schema": schema}):
        user_types.setdefault(r[0], []).append(_type_from_row(r[2:]))
    by_seq = {r[1]: r for r in seq_rows}

    out: dict[str, TableStructure] = {}
    for name in names:
        key = (schema, name)
        columns = []
        wanted_seqs: dict[str, str | None] = {}
        for c in cols.get(key, []):
            identity: dict[str, Any] | None = None
            if c.get("identity"):
                ident = c["identity"]
                identity = {
                    k: ident[k]
                    for k in (
                        "always",
                        "start",
                        "increment",
                        "minvalue",
                        "maxvalue",
                        "cycle",
                        "cache",
                    )
                    if k in ident and ident[k] is not None
                }
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
                m = _NEXTVAL.search(default)
                if m:
                    wanted_seqs[_seq_name(m.group(1))[1]] = c["name"]
        for r in seq_rows:
            if r[10] == name and r[11] is not None:
                wanted_seqs.setdefault(r[1], r[11])
        sequences = []
        for seq_name, col in sorted(wanted_seqs.items()):
            seq_row = by_seq.get(seq_name)
            if seq_row is None:
                continue
            r = seq_row
            sequences.append(
                SequenceStructure(
                    name=r[1],
                    schema=r[0],
                    column=col,
                    data_type=r[2],
                    start=int(r[3]),
                    increment=int(r[4]),
                    min_value=int(r[5]),
                    max_value=int(r[6]),
                    cache=int(r[7]),
                    cycle=bool(r[8]),
                    last_value=None if r[9] is None else int(r[9]),
                    identity=r[12] == "i",
                )
            )
        pk: dict[str, Any] = dict(pks.get(key) or {})
        out[name] = TableStructure(
            name=name,
            schema=schema,
            columns=tuple(columns),
            primary_key=tuple(pk.get("constrained_columns") or ()),
            primary_key_name=pk.get("name"),
            unique_constraints=tuple(
                {"name": u["name"], "columns": list(u["column_names"])}
                for u in uniques.get(key, [])
            ),
            indexes=tuple(
                {
                    "name": i["name"],
                    "unique": bool(i["unique"]),
                    "columns": list(i["column_names"]),
                    "expressions": list(i.get("expressions") or []) or None,
                    "column_sorting": {
                        k: [m for m in v if m in _SORTING]
                        for k, v in (i.get("column_sorting") or {}).items()
                    }
                    or None,
                    "dialect_options": _plain(i.get("dialect_options") or {}),
                }
                for i in indexes.get(key, [])
                if not i.get("duplicates_constraint")
            ),
            foreign_keys=tuple(
                {
                    "name": f["name"],
                    "columns": list(f["constrained_columns"]),
                    "referred_schema": f.get("referred_schema"),
                    "referred_table": f["referred_table"],
                    "referred_columns": list(f["referred_columns"]),
                    "options": _plain(f.get("options") or {}),
                }
                for f in fks.get(key, [])
            ),
            check_constraints=tuple(
                {"name": c["name"], "sqltext": c["sqltext"]} for c in checks.get(key, [])
            ),
            sequences=tuple(sequences),
            comment=_comment(comments.get(key)),
            types=tuple(user_types.get(name, ())),
        )
    return out


def _comment(c: Any) -> str | None:
    text = (c or {}).get("text")
    return str(text) if text is not None else None


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of reflection options (SQLAlchemy may return clause objects or tuples)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple)):
            out[k] = [str(x) for x in v]
        elif v is None or isinstance(v, (str, int, bool, float)):
            out[k] = v
        else:
            out[k] = str(v)
    return out


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class SchemaChange:
    """One structural difference found by Alembic, as a describable, loggable value."""

    kind: str  # add_table, add_column, alter_column, add_index, drop_column, ...
    description: str
    destructive: bool = False


@dataclass
class SchemaDiff:
    table: str
    ops: list[alembic_ops.MigrateOperation] = field(default_factory=list)
    changes: list[SchemaChange] = field(default_factory=list)
    skipped: list[SchemaChange] = field(default_factory=list)
    creates_table: bool = False


def _comparable_type_text(type_: sa.types.TypeEngine[Any], default_schema: str | None) -> str:
    """The type's DDL text without a leading default schema.

    An enum or domain column travels as ``format_type()`` text (``mood``, or ``public.mood``
    where the source's search path lacks ``public``); the target reflects it as an ENUM or
    DOMAIN named with its schema only when that schema is not on the search path. Both
    spellings name the same type.
    """
    text = type_text(type_)
    if default_schema:
        prep = _DIALECT.identifier_preparer
        for prefix in (f"{prep.quote_schema(default_schema)}.", f'"{default_schema}".'):
            if text.startswith(prefix):
                return text[len(prefix) :]
    return text


def _compare_type(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool:
    default_schema = getattr(getattr(context, "dialect", None), "default_schema_name", None)
    return _comparable_type_text(inspected_type, default_schema) != _comparable_type_text(
        metadata_type, default_schema
    )


def _normalise_default(text: str | None, table: str, column: str) -> str | None:
    if text is None:
        return None
    text = text.strip()
    m = _NEXTVAL.fullmatch(text)
    if m and _seq_name(m.group(1))[1] == f"{table}_{column}_seq":
        # Alembic reports a serial column's own sequence default as None when reflecting the
        # target; treat the source's the same way.
        return None
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def _compare_default(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    # Alembic's own PostgreSQL comparison evaluates both defaults in a SELECT built as text,
    # which breaks on JSON defaults containing ":1" (a bind parameter to SQLAlchemy). The
    # defaults on both sides come from pg_get_expr(), so their texts are comparable as is.
    if metadata_column.identity is not None or metadata_column.computed is not None:
        return False
    table, column = metadata_column.table.name, metadata_column.name
    return _normalise_default(inspected_default, table, column) != _normalise_default(
        rendered_metadata_default, table, column
    )


def _skip_generated_defaults(
    autogen_context: Any,
    alter_column_op: alembic_ops.AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: sa.Column[Any],
    metadata_col: sa.Column[Any],
) -> PriorityDispatchResult:
    """Identity and generated columns have no server default to compare: stop there.

    Alembic (1.20) renders the target's default as ``.arg.text`` before calling a
    ``compare_server_default`` callable, which fails with AttributeError when the target's
    column is an identity or generated column (neither has ``.arg``). Registered for
    PostgreSQL at FIRST priority, this runs before that step and ends the server default
    comparison for such columns, as :func:`_compare_default` would.
    """
    from alembic.util import PriorityDispatchResult

    generated = (sa.Identity, sa.Computed)
    if isinstance(conn_col.server_default, generated) or isinstance(
        metadata_col.server_default, generated
    ):
        alter_column_op.existing_server_default = conn_col.server_default
        return PriorityDispatchResult.STOP
    return PriorityDispatchResult.CONTINUE


@functools.cache
def _add_foreign_key_op_class() -> Callable[
    [sa.ForeignKeyConstraint], alembic_ops.CreateForeignKeyOp
]:
    """The op class below, made on first use (Alembic is imported only to compare or change)."""
    from alembic.operations import ops as alembic_ops

    class AddForeignKeyOp(alembic_ops.CreateForeignKeyOp):
        """Adds exactly the metadata's constraint (its referred columns are Column objects).

        Alembic's own op rebuilds the constraint from ``"table.column"`` strings, which SQLAlchemy
        splits on dots: ``"dot.a".id`` would become table ``a`` of a schema ``dot``.
        """

        def __init__(self, constraint: sa.ForeignKeyConstraint):
            base = alembic_ops.CreateForeignKeyOp.from_constraint(constraint)
            super().__init__(
                base.constraint_name,
                base.source_table,
                base.referent_table,
                base.local_cols,
                base.remote_cols,
                **base.kw,
            )
            self.constraint = constraint

        def to_constraint(self, migration_context: Any = None) -> sa.ForeignKeyConstraint:
            return self.constraint

    return AddForeignKeyOp


def _fk_options(options: Any) -> tuple[Any, ...]:
    return tuple(
        (options.get(k) or None) for k in ("onupdate", "ondelete", "deferrable", "initially")
    )


def _compare_foreign_keys(
    autogen_context: Any,
    modify_table_ops: alembic_ops.ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> PriorityDispatchResult:
    """Foreign keys of a table both sides have, compared by what they mean (names aside).

    Replaces Alembic's comparison, which builds the target's constraints from ``"a.b.c"``
    strings: a table or column name holding a dot cannot be found that way.
    """
    from alembic.operations import ops as alembic_ops
    from alembic.util import PriorityDispatchResult

    if conn_table is None or metadata_table is None:
        return PriorityDispatchResult.CONTINUE  # CREATE TABLE carries its foreign keys

    def referred(schema_: str | None) -> str | None:
        return None if schema_ in (None, autogen_context.dialect.default_schema_name) else schema_

    target: dict[tuple[Any, ...], str | None] = {}
    for fk in autogen_context.inspector.get_foreign_keys(tname, schema=schema):
        sig = (
            tuple(fk["constrained_columns"]),
            referred(fk.get("referred_schema")),
            fk["referred_table"],
            tuple(fk["referred_columns"]),
            _fk_options(fk.get("options") or {}),
        )
        target[sig] = fk.get("name")
    wanted: dict[tuple[Any, ...], sa.ForeignKeyConstraint] = {}
    for c in metadata_table.constraints:
        if not isinstance(c, sa.ForeignKeyConstraint):
            continue
        sig = (
            tuple(c.column_keys),
            referred(c.referred_table.schema),
            c.referred_table.name,
            tuple(e.column.name for e in c.elements),
            _fk_options(
                {
                    "onupdate": c.onupdate,
                    "ondelete": c.ondelete,
                    "deferrable": c.deferrable,
                    "initially": c.initially,
                }
            ),
        )
        wanted[sig] = c
    for sig, name in target.items():
        if sig not in wanted and name:
            modify_table_ops.ops.append(
                alembic_ops.DropConstraintOp(name, tname, type_="foreignkey", schema=schema)
            )
    for sig, constraint in wanted.items():
        if sig not in target:
            modify_table_ops.ops.append(_add_foreign_key_op_class()(constraint))
    return PriorityDispatchResult.STOP


_PLUGIN = "migration_manager.generated_defaults"


def _register_plugin() -> None:
    """Register :func:`_skip_generated_defaults` and :func:`_compare_foreign_keys` with Alembic
    (once per process)."""
    from alembic.runtime.plugins import Plugin
    from alembic.util import DispatchPriority

    try:
        plugin = Plugin(_PLUGIN)
    except ValueError:  # already registered
        return
    plugin.add_autogenerate_comparator(
        _skip_generated_defaults,
        "column",
        "server_default",
        qualifier="postgresql",
        priority=DispatchPriority.FIRST,
    )
    plugin.add_autogenerate_comparator(
        _compare_foreign_keys,
        "table",
        "foreignkeys",
        qualifier="postgresql",
        priority=DispatchPriority.FIRST,
    )


def _walk(
    ops_list: Iterable[alembic_ops.MigrateOperation],
) -> Iterator[alembic_ops.MigrateOperation]:
    from alembic.operations import ops as alembic_ops

    for op in ops_list:
        if isinstance(op, alembic_ops.OpContainer):
            yield from _walk(op.ops)
        else:
            yield op


def _describe(op: alembic_ops.MigrateOperation) -> SchemaChange:
    from alembic.operations import ops as alembic_ops

    if isinstance(op, alembic_ops.CreateTableOp):
        return SchemaChange("add_table", f"create table {op.table_name}")
    if isinstance(op, alembic_ops.DropTableOp):
        return SchemaChange("drop_table", f"drop table {op.table_name}", destructive=True)
    if isinstance(op, alembic_ops.AddColumnOp):
        return SchemaChange(
            "add_column", f"add column {op.column.name} {type_text(op.column.type)}"
        )
    if isinstance(op, alembic_ops.DropColumnOp):
        return SchemaChange("drop_column", f"drop column {op.column_name}", destructive=True)
    if isinstance(op, alembic_ops.AlterColumnOp):
        parts = []
        if op.modify_type is not None:
            before = type_text(op.existing_type) if op.existing_type is not None else "?"
            parts.append(f"type {before} -> {type_text(op.modify_type)}")
        if op.modify_nullable is not None:
            parts.append("nullable" if op.modify_nullable else "not null")
        if op.modify_server_default is not False:
            parts.append("default")
        if op.modify_comment is not False:
            parts.append("comment")
        return SchemaChange("alter_column", f"alter column {op.column_name}: {', '.join(parts)}")
    if isinstance(op, alembic_ops.CreateIndexOp):
        return SchemaChange("add_index", f"create index {op.index_name}")
    if isinstance(op, alembic_ops.DropIndexOp):
        return SchemaChange("drop_index", f"drop index {op.index_name}", destructive=True)
    if isinstance(op, alembic_ops.AddConstraintOp):
        return SchemaChange(
            "add_constraint", f"add constraint {getattr(op, 'constraint_name', '')}"
        )
    if isinstance(op, alembic_ops.DropConstraintOp):
        return SchemaChange(
            "drop_constraint", f"drop constraint {op.constraint_name}", destructive=True
        )
    if isinstance(op, (alembic_ops.CreateTableCommentOp, alembic_ops.DropTableCommentOp)):
        return SchemaChange("table_comment", "table comment")
    return SchemaChange(type(op).__name__, repr(op))


def _migration_context(
    conn: sa.Connection, structure: TableStructure, metadata: sa.MetaData
) -> MigrationContext:
    default_schema = conn.dialect.default_schema_name
    schema = structure.schema

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema or (name is None and schema in (None, default_schema))
        if type_ == "table":
            return name == structure.name
        return True

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        # The metadata also holds stub tables standing for the tables this one references;
        # include_name only filters reflected names, so without this every referenced table
        # the target has would be "created" again (and fail: relation already exists).
        if type_ == "table" and not reflected:
            return bool(obj.name == structure.name and obj.schema == structure.schema)
        return True

    from alembic.runtime.migration import MigrationContext

    _register_plugin()
    context = MigrationContext.configure(
        connection=conn,
        opts={
            "target_metadata": metadata,
            "compare_type": _compare_type,
            "compare_server_default": _compare_default,
            "include_name": include_name,
            "include_object": include_object,
            "include_schemas": schema not in (None, default_schema),
            "autogenerate_plugins": ["alembic.autogenerate.*", _PLUGIN],
        },
    )
    # Instead of Alembic's PostgreSQL hook, which drops a serial column's default after looking
    # its sequence up by the literal's text (quotes still doubled: fails for "it's_id_seq").
    context.impl.autogen_column_reflect = _catalog_column_reflect(conn)  # type: ignore[method-assign]
    return context


def _catalog_column_reflect(conn: sa.Connection) -> Callable[[Any, sa.Table, Any], None]:
    """A ``column_reflect`` hook: the target column's own NOT NULL and default, from the catalog.

    SQLAlchemy gives a column of a domain the domain's default and NOT NULL; comparing those
    with the source's (read from the catalog, :data:`_FORMAT_TYPES`) would add or lose a default.
    """
    facts: dict[tuple[str | None, str], dict[str, tuple[bool, str | None]]] = {}

    def hook(inspector: Any, table: sa.Table, column_info: Any) -> None:
        key = (table.schema, table.name)
        if key not in facts:
            facts[key] = {
                r[0]: (bool(r[1]), r[2])
                for r in conn.execute(
                    sa.text(_COLUMN_FACTS), {"schema": table.schema, "name": table.name}
                )
            }
        found = facts[key].get(column_info["name"])
        if found is None:
            return
        column_info["nullable"] = not found[0]
        if not column_info.get("computed") and not column_info.get("identity"):
            column_info["default"] = found[1]

    return hook


def _in_default_schema(structure: TableStructure, default_schema: str | None) -> TableStructure:
    """``structure`` with the connection's default schema left implicit, as Alembic reflects it.

    Alembic compares a default-schema table with schema None and reflects its foreign keys
    with ``referred_schema`` None; a metadata table naming ``public`` explicitly would differ
    from the target in every foreign key (dropped and created again on each run).
    """
    if structure.schema not in (None, default_schema):
        return structure
    foreign_keys = tuple(
        {**fk, "referred_schema": None} if fk.get("referred_schema") == default_schema else fk
        for fk in structure.foreign_keys
    )
    return replace(structure, schema=None, foreign_keys=foreign_keys)


def diff_table(
    conn: sa.Connection, structure: TableStructure, *, allow_drop: bool = False
) -> SchemaDiff:
    """What the target needs so that ``structure``'s table matches the source's.

    Destructive operations (dropping columns, indexes, constraints) are left out unless
    ``allow_drop``; they are reported in ``skipped`` so the caller can warn.
    """
    structure = _in_default_schema(structure, conn.dialect.default_schema_name)
    metadata = sa.MetaData()
    structure.to_table(metadata)  # with stubs of the tables its foreign keys refer to
    from alembic.autogenerate import produce_migrations
    from alembic.operations import ops as alembic_ops

    context = _migration_context(conn, structure, metadata)
    script = produce_migrations(context, metadata)
    upgrade_ops = script.upgrade_ops
    assert upgrade_ops is not None
    diff = SchemaDiff(table=structure.name)
    for op in _walk(upgrade_ops.ops):
        if isinstance(op, alembic_ops.DropTableOp):
            continue  # never: only stub tables for FK targets could show up here
        change = _describe(op)
        if change.destructive and not allow_drop:
            diff.skipped.append(change)
            continue
        if isinstance(op, alembic_ops.AlterColumnOp) and op.modify_type is not None:
            col = sa.Column(op.column_name, op.modify_type)
            op.kw["postgresql_using"] = (
                f"{_DIALECT.identifier_preparer.quote(col.name)}::{type_text(op.modify_type)}"
            )
        if isinstance(op, alembic_ops.CreateTableOp):
            diff.creates_table = True
        diff.ops.append(op)
        diff.changes.append(change)
    return diff


class StatementRecorder:
    """Records every statement a SQLAlchemy connection executes (the executed schema SQL)."""

    def __init__(self, conn: sa.Connection):
        self.conn = conn
        self.statements: list[str] = []

    def __enter__(self) -> StatementRecorder:
        sa.event.listen(self.conn, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.conn, "before_cursor_execute", self._record)

    def _record(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        self.statements.append(statement.strip())


def apply_diff(conn: sa.Connection, diff: SchemaDiff) -> None:
    """Run Alembic's operations; each statement alone (:func:`pg.single_statements`)."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    operations = Operations(MigrationContext.configure(connection=conn))
    with pg.single_statements(conn):
        for op in diff.ops:
            operations.invoke(op)


_SEQUENCE_TYPES = ("smallint", "integer", "bigint")


def create_sequence_sql(seq: SequenceStructure) -> sql.Composed:
    """``CREATE SEQUENCE`` for ``seq``: names as identifiers, every number checked to be one."""
    if seq.data_type not in _SEQUENCE_TYPES:
        raise ApplyError(
            f"Sequence {seq.name!r}: data type {seq.data_type!r} is not one of "
            f"{', '.join(_SEQUENCE_TYPES)}; the migration file is damaged or was not written by "
            "this tool: create the migration file again",
            terminal=True,
        )
    numbers = {}
    for what in ("increment", "min_value", "max_value", "start", "cache"):
        value = getattr(seq, what)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApplyError(
                f"Sequence {seq.name!r}: {what} {value!r} is not an integer; the migration file "
                "is damaged or was not written by this tool: create the migration file again",
                terminal=True,
            )
        numbers[what] = sql.Literal(value)
    return sql.SQL(
        "CREATE SEQUENCE {} AS {} INCREMENT BY {increment} MINVALUE {min_value} "
        "MAXVALUE {max_value} START WITH {start} CACHE {cache}{cycle}"
    ).format(
        sql.SQL(_quoted(seq.schema, seq.name)),  # SQLAlchemy's quoting, as in the other DDL
        sql.SQL(seq.data_type),
        cycle=sql.SQL(" CYCLE" if seq.cycle is True else ""),
        **numbers,
    )


def ensure_sequences(
    conn: sa.Connection, structure: TableStructure, execute: Callable[[str], None]
) -> None:
    """Create the table's non-identity sequences the target lacks (before the table needs them)."""
    for seq in structure.sequences:
        if seq.identity:
            continue
        exists = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'S' AND c.relname = :name AND n.nspname = COALESCE(:schema, current_schema())"
            ),
            {"name": seq.name, "schema": seq.schema},
        ).first()
        if exists:
            continue
        execute(create_sequence_sql(seq).as_string(conn.connection.driver_connection))


def ensure_types(
    conn: sa.Connection, structure: TableStructure, execute: Callable[[str], None]
) -> None:
    """Create the enums and domains the table's columns use that the target lacks.

    In the table's dependency order (an enum before a domain over it), in the caller's
    transaction. A type the target has is left as it is (``prepare`` compared it with the
    source's). Units applied at the same time may both miss a type: the second one's CREATE
    waits for the first to commit, fails, and then finds the type made; a savepoint keeps
    that failure from spoiling the unit's transaction.
    """
    context = conn.connection.driver_connection
    for t in structure.types:
        if find_type(conn, t.schema, t.name) is not None:
            continue
        if not conn.execute(
            sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": t.schema}
        ).first():
            quoted = _DIALECT.identifier_preparer.quote_schema(t.schema)
            execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        try:
            with conn.begin_nested():
                execute(t.create_sql(context))
        except (sa.exc.DBAPIError, psycopg.Error) as exc:
            orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            raced = isinstance(
                orig, (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject)
            )
            if not raced or find_type(conn, t.schema, t.name) is None:
                raise
            log.info(
                "%s: type %s was created meanwhile by another unit", structure.name, t.qualified
            )


def _quoted(schema: str | None, name: str) -> str:
    prep = _DIALECT.identifier_preparer
    return f"{prep.quote_schema(schema)}.{prep.quote(name)}" if schema else prep.quote(name)


def own_sequences(
    conn: sa.Connection, structure: TableStructure, execute: Callable[[str], None]
) -> None:
    """``ALTER SEQUENCE ... OWNED BY`` for sequences the source ties to a column and the target does not."""
    for seq in structure.sequences:
        if seq.identity or seq.column is None:
            continue
        owned = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
                "JOIN pg_namespace n ON n.oid = s.relnamespace "
                "WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'a' AND s.relname = :name "
                "AND n.nspname = COALESCE(:schema, current_schema())"
            ),
            {"name": seq.name, "schema": seq.schema},
        ).first()
        if owned:
            continue
        execute(
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}")
            .format(
                sql.SQL(_quoted(seq.schema, seq.name)),  # SQLAlchemy's quoting
                sql.SQL(_quoted(structure.schema, structure.name)),
                sql.SQL(_DIALECT.identifier_preparer.quote(seq.column)),
            )
            .as_string(conn.connection.driver_connection)
        )
