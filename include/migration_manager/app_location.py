"""Where a NocoBase application's tables are: refuse a connection whose settings point elsewhere.

A connection's ``app_env`` (``DB_SCHEMA``, ``DB_TABLE_PREFIX``, ``DB_UNDERSCORED``) selects the
application's tables. When they are missing or wrong, the selected schema/prefix holds none of
NocoBase's own tables and a run would read (or write) nothing of the app and still end green.
:func:`require_app_tables` refuses that before anything is written, and names the schema, prefix
and naming style where NocoBase's tables are when the database holds them elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from migration_manager.errors import ConfigError
from migration_manager.nocobase_names import underscore

# Tables every NocoBase database has (the first one tells camelCase from snake_case names).
MARKERS = ("applicationPlugins", "collections", "migrations")


@dataclass(frozen=True)
class Found:
    """One place in the database that looks like a NocoBase application."""

    schema: str
    prefix: str
    underscored: bool | None  # None: only names that read the same either way were found
    tables: int  # tables in the schema whose names start with the prefix

    def advice(self) -> str:
        settings = [f"DB_SCHEMA={self.schema}", f"DB_TABLE_PREFIX={self.prefix}"]
        if self.underscored is not None:
            settings.append(f"DB_UNDERSCORED={'true' if self.underscored else 'false'}")
        named = f"named {self.prefix}*" if self.prefix else "without a prefix"
        return (
            f"schema {self.schema!r} holds {self.tables} tables {named}: set "
            f"{', '.join(settings)} in the connection's app_env"
        )


def _marker_forms() -> dict[str, tuple[str, bool | None]]:
    """Each marker's physical spelling -> (marker, whether it means DB_UNDERSCORED; None: both)."""
    forms: dict[str, tuple[str, bool | None]] = {}
    for marker in MARKERS:
        snake = underscore(marker)
        if snake == marker:
            forms[marker] = (marker, None)
        else:
            forms[marker], forms[snake] = (marker, False), (marker, True)
    return forms


def locate(conn: sa.Connection) -> list[Found]:
    """Every schema/prefix/naming style in the database that holds NocoBase's marker tables."""
    rows = conn.execute(
        sa.text(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%'"
        )
    ).all()
    names: dict[str, list[str]] = {}
    for schema, table in rows:
        names.setdefault(schema, []).append(table)
    forms = _marker_forms()
    # (schema, prefix) -> marker -> naming style it shows
    places: dict[tuple[str, str], dict[str, bool | None]] = {}
    for schema, tables in names.items():
        for table in tables:
            for form, (marker, style) in forms.items():
                if table.endswith(form):
                    places.setdefault((schema, table[: -len(form)]), {})[marker] = style
    found = []
    for (schema, prefix), markers in sorted(places.items()):
        if len(markers) < 2:  # one name alone ("aiCollections") is no application
            continue
        known = set(markers.values()) - {None}
        style = next(iter(known)) if len(known) == 1 else None
        count = sum(1 for t in names[schema] if t.startswith(prefix))
        found.append(Found(schema, prefix, style, count))
    # the likeliest first: most tables, then a place where the naming style is known
    return sorted(found, key=lambda f: (-f.tables, f.underscored is None, f.schema, f.prefix))


def require_app_tables(
    conn: sa.Connection, schema: str, physical: dict[str, str], side: str
) -> None:
    """Raise ConfigError unless ``schema`` holds one of the marker tables (``physical``: marker ->
    its physical name under the connection's settings)."""
    present = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relname = ANY(:names) AND c.relkind IN ('r', 'p')"
        ),
        {"s": schema, "names": list(physical.values())},
    ).first()
    if present:
        return
    expected = ", ".join(physical[m] for m in MARKERS)
    places = locate(conn)
    where = (
        "; ".join(p.advice()[0].upper() + p.advice()[1:] for p in places[:3])
        if places
        else "The database holds no NocoBase tables in any schema: is this the right database, "
        "or is the profile meant to be generic?"
    )
    raise ConfigError(
        f"The {side} connection selects schema {schema!r} with no NocoBase tables in it (looked "
        f"for {expected}): its app_env (DB_SCHEMA, DB_TABLE_PREFIX, DB_UNDERSCORED) does not say "
        f"where the application is. {where}. Nothing was written."
    )
