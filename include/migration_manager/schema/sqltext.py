"""PostgreSQL's SQL texts and SQLAlchemy: ``format_type()`` types, defaults, sequence and quoted names.

The structure travels with column types as PostgreSQL's own ``format_type()`` text and defaults
as ``pg_get_expr()`` text; this module turns those texts into SQLAlchemy objects and back.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import UserDefinedType

# Renders names and types as text that is run as it is (psycopg.sql, no parameters) or compared
# with catalog text: "named" keeps a "%" in a name one "%" (the default "pyformat" doubles it
# for a driver that would read it as a placeholder: a sequence "%s_seq" became "%%s_seq").
DIALECT = postgresql.dialect(paramstyle="named")
_ARGS = re.compile(r"\(([^)]*)\)")
# the sequence's name is a SQL literal inside: quotes in it are doubled (nextval('"it''s_seq"'...))
NEXTVAL = re.compile(r"nextval\('((?:[^']|'')+)'::regclass\)")


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


def sql_text(text: str) -> sa.TextClause:
    """SQL text from a catalog or a migration file (a default, an index expression, a check) as
    SQLAlchemy's ``text()``, kept exactly: every colon escaped, so neither ``{"a":1}`` nor a
    column named ``:name`` is read as a bind parameter (SQLAlchemy turns ``\\:`` back into ``:``)."""
    return sa.text(text.replace(":", "\\:"))


def default_clause(text: str | None) -> sa.TextClause | None:
    """A server default as SQL text (:func:`sql_text`)."""
    return None if text is None else sql_text(text)


def type_text(type_: sa.types.TypeEngine[Any]) -> str:
    return str(type_.compile(dialect=DIALECT))


def ddl_name(schema: str | None, name: str) -> sql.Composable:
    """``schema.name`` quoted as SQLAlchemy's DDL quotes it (only where needed), for ``psycopg.sql``.

    The hand-written DDL (types, sequences) names things as the DDL SQLAlchemy writes for the
    same table does: ``public."Mood"``, not ``"public"."Mood"``.
    """
    prep = DIALECT.identifier_preparer
    if schema is None:
        return sql.SQL(prep.quote(name))
    return sql.SQL(".").join([sql.SQL(prep.quote_schema(schema)), sql.SQL(prep.quote(name))])


def seq_name(text: str) -> tuple[str | None, str]:
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
