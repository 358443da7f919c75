"""Application profiles: which tables are built-in, their default rules, which settings must match.

``nocobase`` knows NocoBase's built-in tables from NocoBase's own collection definitions, per
version (``data/nocobase/<minor>.json``, see :mod:`migration_manager.nocobase_knowledge`), with
the documentation's list (``data/nocobase_builtin_tables.tsv``) as fallback, tells user-defined
collections from system ones through the ``collections`` table, and lets companion tables (m2m
through tables, tree path tables) follow the collections they belong to. ``generic`` treats every table as user-defined.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from migration_manager import pg
from migration_manager import references as table_refs
from migration_manager.app_location import MARKERS, require_app_tables
from migration_manager.config import (
    PROFILE_NAMES,
    RULES,
    SCHEMA_ONLY,
    SYSTEM,
    USER,
    check_profile,
)
from migration_manager.errors import ConfigError
from migration_manager.nocobase_knowledge import CodeCollection, KnowledgeChoice
from migration_manager.nocobase_knowledge import choose as choose_knowledge
from migration_manager.nocobase_secrets import aes_key, nocobase_encrypt
from migration_manager.schema import TableStructure
from migration_manager.table_scope import TableClass, TableScope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    """An app setting that must be equal in source and target (``.env`` name and default)."""

    name: str
    default: str
    boolean: bool = False

    def normalise(self, env: Mapping[str, str]) -> str:
        raw = env.get(self.name)
        value = self.default if raw is None or str(raw).strip() == "" else str(raw).strip()
        if self.boolean:
            return "true" if value.lower() in ("1", "true", "yes", "on") else "false"
        return value


class Profile:
    name = "generic"
    description = "Any PostgreSQL database: every table is user-defined, no settings are checked."
    checked_settings: tuple[Setting, ...] = ()
    versioned = False  # whether the application records its version (checked on both sides)

    def scope(self, env: Mapping[str, str]) -> TableScope:
        return TableScope()

    def settings(self, env: Mapping[str, str]) -> dict[str, str]:
        """The checked settings' effective values (defaults filled in)."""
        return {s.name: s.normalise(env) for s in self.checked_settings}

    def classify(
        self, conn: sa.Connection, scope: TableScope, tables: list[str]
    ) -> dict[str, TableClass]:
        return {t: TableClass(t, USER, SCHEMA_ONLY) for t in tables}

    def app_version(self, conn: sa.Connection, scope: TableScope) -> str | None:
        return None

    def require_app(self, conn: sa.Connection, scope: TableScope, side: str) -> None:
        """Raise ConfigError when ``scope`` holds none of the application's tables."""

    def references(
        self, conn: sa.Connection, scope: TableScope, structures: Mapping[str, TableStructure]
    ) -> tuple[list[table_refs.TableReference], dict[str, tuple[str, ...]]]:
        """References between the tables, and the natural keys that keep them valid."""
        return table_refs.foreign_key_references(structures), {}

    def knowledge(self, conn: sa.Connection, scope: TableScope) -> KnowledgeChoice | None:
        """Which version of the profile's table knowledge the source gets (None: no such thing)."""
        return None

    def storage_note(self, conn: sa.Connection, scope: TableScope) -> str | None:
        """A warning when the source has files the database does not hold (None: nothing to say)."""
        return None

    # -- environment variables and plugins (none for a generic database)

    env_reference: re.Pattern[bytes] | None = None

    def environment_variables(
        self, conn: sa.Connection, scope: TableScope
    ) -> list[tuple[str, str]]:
        """The application's dynamic environment variables: (name, type), type ``default`` or ``secret``."""
        return []

    def enabled_plugins(self, conn: sa.Connection, scope: TableScope) -> list[dict[str, str]]:
        return []

    def store_environment_values(
        self, conn: sa.Connection, scope: TableScope, values: list[tuple[str, str, str]]
    ) -> None:
        """Write (name, type, stored value) rows the way the application stores them."""
        if values:
            raise ConfigError(f"The {self.name} profile has no environment variables to write")

    def stored_secret(self, value: str, env: Mapping[str, str]) -> str:
        """A secret's value as the application stores it (NocoBase: AES-encrypted)."""
        return value


@cache
def nocobase_builtin_rules() -> dict[str, str]:
    text = (
        resources.files("migration_manager.data")
        .joinpath("nocobase_builtin_tables.tsv")
        .read_text("utf-8")
    )
    rules: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            table, rule, _category = line.split("\t")
            assert rule in RULES, (table, rule)
            rules[table] = rule
    return rules


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


class NocoBaseProfile(Profile):
    name = "nocobase"
    description = (
        "NocoBase 1.x/2.x: built-in tables with the default rules NocoBase's own collection "
        "definitions declare (per version), the documented list as fallback."
    )
    versioned = True
    checked_settings = (
        Setting("DB_UNDERSCORED", "false", boolean=True),
        Setting("USE_DB_SCHEMA_IN_SUBAPP", "false", boolean=True),
        Setting("DB_TABLE_PREFIX", ""),
        Setting("DB_SCHEMA", "public"),
        Setting("COLLECTION_MANAGER_SCHEMA", ""),
    )

    def settings(self, env: Mapping[str, str]) -> dict[str, str]:
        values = super().settings(env)
        # NocoBase's collection manager uses DB_SCHEMA unless told otherwise.
        values["COLLECTION_MANAGER_SCHEMA"] = (
            values["COLLECTION_MANAGER_SCHEMA"] or values["DB_SCHEMA"]
        )
        return values

    def scope(self, env: Mapping[str, str]) -> TableScope:
        s = self.settings(env)
        return TableScope(
            schema=s["DB_SCHEMA"],
            prefix=s["DB_TABLE_PREFIX"],
            underscored=s["DB_UNDERSCORED"] == "true",
        )

    def _rows(
        self,
        conn: sa.Connection,
        scope: TableScope,
        table: str,
        columns: list[str],
        tables: set[str],
    ) -> list[Any]:
        physical = scope.physical(table)
        if physical not in tables:
            return []
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.Identifier(scope.column(c)) for c in columns),
            sql.Identifier(scope.schema),
            sql.Identifier(physical),
        )
        return list(pg.run_composed(conn, query).fetchall())

    def require_app(self, conn: sa.Connection, scope: TableScope, side: str) -> None:
        require_app_tables(conn, scope.schema, {m: scope.physical(m) for m in MARKERS}, side)

    def references(
        self, conn: sa.Connection, scope: TableScope, structures: Mapping[str, TableStructure]
    ) -> tuple[list[table_refs.TableReference], dict[str, tuple[str, ...]]]:
        present = set(structures)
        known = self.knowledge(conn, scope).knowledge
        columns = ["collectionName", "name", "type", "options"]
        fields = [
            (*r[:3], _json(r[3])) for r in self._rows(conn, scope, "fields", columns, present)
        ]
        refs = table_refs.foreign_key_references(structures)
        refs += table_refs.nocobase_references(
            known, fields, scope.physical, scope.column, structures
        )
        return refs, table_refs.natural_keys(known, scope.physical, scope.column, structures, refs)

    def knowledge(self, conn: sa.Connection, scope: TableScope) -> KnowledgeChoice:
        """The code-derived table knowledge for the source's ``applicationVersion``."""
        return choose_knowledge(self.app_version(conn, scope))

    def classify(
        self, conn: sa.Connection, scope: TableScope, tables: list[str]
    ) -> dict[str, TableClass]:
        present = set(tables)
        builtin = {scope.physical(k): v for k, v in nocobase_builtin_rules().items()}
        knowledge = self.knowledge(conn, scope).knowledge
        code: dict[str, CodeCollection] = {}  # physical table -> code definition
        through: dict[str, set[str]] = {}  # physical through table -> physical sides
        if knowledge is not None:
            for c in knowledge.collections.values():
                code[scope.physical(c.table)] = c
            for link in knowledge.through.values():
                table_of = {
                    s: knowledge.collections[s].table if s in knowledge.collections else s
                    for s in link.sides
                }
                through.setdefault(scope.physical(link.name), set()).update(
                    scope.physical(table_of[s]) for s in link.sides
                )
        collections: dict[str, dict[str, Any]] = {}  # physical table -> options
        for name, options in self._rows(conn, scope, "collections", ["name", "options"], present):
            opts = _json(options)
            collections[scope.physical(str(opts.get("tableName") or name))] = opts
        fields = self._rows(conn, scope, "fields", ["collectionName", "type", "options"], present)
        for collection, ftype, options in fields:
            if ftype != "belongsToMany":
                continue
            opts = _json(options)
            if opts.get("through"):
                sides = through.setdefault(scope.physical(str(opts["through"])), set())
                sides.add(scope.physical(str(collection)))
                if opts.get("target"):
                    sides.add(scope.physical(str(opts["target"])))
        # Tree collections keep their paths in "main_<collection>_path" (built-in trees such as
        # desktopRoutes are not in `collections`, so any table of that shape follows its tree).
        tree_paths: dict[str, str] = {}
        for t in tables:
            m = re.fullmatch(re.escape(scope.prefix) + r"main_(.+)_path", t)
            if m and scope.prefix + m.group(1) in present:
                tree_paths[t] = scope.prefix + m.group(1)

        def group_of(table: str) -> str:
            if table in builtin or table in code or collections.get(table, {}).get("origin"):
                return SYSTEM
            return USER if table in collections else SYSTEM

        def allowed(rules: Any) -> tuple[str, ...] | None:
            if isinstance(rules, (list, tuple)) and rules:
                return tuple(dict.fromkeys(r for r in rules if r in RULES)) or None
            return None

        out: dict[str, TableClass] = {}
        for t in tables:
            opts = collections.get(t, {})
            defined = code.get(t)
            # the instance's own `collections` row (a built-in collection extended by users)
            # speaks first, then the code's definition
            allowed_rules = allowed(opts.get("migrationRules")) or allowed(
                defined.migration_rules if defined else None
            )
            if t in through:
                # m2m through tables follow their two sides (the weaker rule), whether the
                # relation is a `fields` row or declared in a plugin's code
                linked = tuple(sorted(s for s in through[t] if s in present))
                group = USER if any(group_of(s) == USER for s in linked) else SYSTEM
                fallback = allowed_rules[0] if allowed_rules else builtin.get(t, SCHEMA_ONLY)
                out[t] = TableClass(t, group, fallback, allowed_rules, companion_of=linked)
            elif defined is not None and allowed_rules:
                out[t] = TableClass(t, SYSTEM, allowed_rules[0], allowed_rules)
            elif t in builtin:
                out[t] = TableClass(t, SYSTEM, builtin[t], allowed_rules)
            elif t in tree_paths:
                tree = tree_paths[t]
                out[t] = TableClass(
                    t,
                    group_of(tree),
                    SCHEMA_ONLY,
                    None,
                    companion_of=(tree,) if tree in present else (),
                )
            elif defined is not None:
                out[t] = TableClass(
                    t,
                    SYSTEM,
                    SCHEMA_ONLY,
                    None,
                    note=f"{t}: declared by {defined.defined_by or ', '.join(defined.extended_by)} "
                    "without migrationRules; schema-only by default",
                )
            elif t in collections and opts.get("origin"):
                first = allowed_rules[0] if allowed_rules else SCHEMA_ONLY
                note = (
                    None
                    if allowed_rules
                    else f"{t}: built-in collection of {opts['origin']} without migrationRules; schema-only by default"
                )
                out[t] = TableClass(t, SYSTEM, first, allowed_rules, note=note)
            elif t in collections:
                out[t] = TableClass(t, USER, SCHEMA_ONLY, allowed_rules)
            else:
                out[t] = TableClass(
                    t,
                    SYSTEM,
                    SCHEMA_ONLY,
                    None,
                    note=f"{t}: not a known NocoBase built-in table nor a collection; schema-only by default",
                )
        return out

    def app_version(self, conn: sa.Connection, scope: TableScope) -> str | None:
        exists = conn.execute(
            sa.text("SELECT to_regclass(:name)"),
            {
                "name": sql.SQL("{}.{}")
                .format(
                    sql.Identifier(scope.schema),
                    sql.Identifier(scope.physical("applicationVersion")),
                )
                .as_string(_raw(conn))
            },
        ).scalar()
        if exists is None:
            return None
        rows = self._rows(
            conn, scope, "applicationVersion", ["value"], {scope.physical("applicationVersion")}
        )
        return str(rows[0][0]) if rows else None

    def storage_note(self, conn: sa.Connection, scope: TableScope) -> str | None:
        present = self._present(conn, scope, "attachments")
        if not present:
            return None
        table = sa.table(scope.physical("attachments"), schema=scope.schema)
        count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        if not count:
            return None
        return (
            f"attachments: the source has {count} attachment(s). NocoBase keeps uploaded files in "
            "its storage/ folder (storage/uploads, or the storage service a file collection "
            "names), which is not in the database: a migration copies the attachments rows, not "
            "the files. Copy the source's storage/uploads to the target app (or share the storage "
            "service), or the files will be missing there"
        )

    env_reference = re.compile(rb"\{\{\s*\$env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

    def _present(self, conn: sa.Connection, scope: TableScope, logical: str) -> set[str]:
        physical = scope.physical(logical)
        found = conn.execute(
            sa.text(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p')"
            ),
            {"s": scope.schema, "t": physical},
        ).first()
        return {physical} if found else set()

    def environment_variables(
        self, conn: sa.Connection, scope: TableScope
    ) -> list[tuple[str, str]]:
        present = self._present(conn, scope, "environmentVariables")
        rows = self._rows(conn, scope, "environmentVariables", ["name", "type"], present)
        return sorted((str(name), str(kind or "default")) for name, kind in rows)

    def enabled_plugins(self, conn: sa.Connection, scope: TableScope) -> list[dict[str, str]]:
        present = self._present(conn, scope, "applicationPlugins")
        rows = self._rows(
            conn,
            scope,
            "applicationPlugins",
            ["name", "packageName", "version", "enabled"],
            present,
        )
        return sorted(
            (
                {"name": str(n), "package": str(p or ""), "version": str(v or "")}
                for n, p, v, on in rows
                if on
            ),
            key=lambda d: d["name"],
        )

    def store_environment_values(
        self, conn: sa.Connection, scope: TableScope, values: list[tuple[str, str, str]]
    ) -> None:
        if not values:
            return
        rows = sql.SQL(", ").join(
            sql.SQL("(now(), now(), {}, {}, {})").format(*map(sql.Literal, row)) for row in values
        )
        query = sql.SQL(
            "INSERT INTO {t} ({c}, {u}, name, type, value) VALUES {rows} ON CONFLICT (name) "
            "DO UPDATE SET type = EXCLUDED.type, value = EXCLUDED.value, {u} = now()"
        ).format(
            t=sql.Identifier(scope.schema, scope.physical("environmentVariables")),
            c=sql.Identifier(scope.column("createdAt")),
            u=sql.Identifier(scope.column("updatedAt")),
            rows=rows,
        )
        # through SQLAlchemy: its transaction (committed by the caller) holds the rows, a table
        # of another shape raises its ProgrammingError; no parameters ('%' of a name stays)
        pg.run_composed(conn, query)

    def stored_secret(self, value: str, env: Mapping[str, str]) -> str:
        return nocobase_encrypt(value, aes_key(env))


def _raw(conn: sa.Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under ``conn`` (same transaction), for SQL built with psycopg.sql."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


PROFILES: dict[str, Profile] = {p.name: p for p in (NocoBaseProfile(), Profile())}
assert sorted(PROFILES) == sorted(PROFILE_NAMES), "config.PROFILE_NAMES names every profile"


def get_profile(name: str | None) -> Profile:
    return PROFILES[check_profile(name)]
