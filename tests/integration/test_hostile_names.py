"""Hostile but valid PostgreSQL names, and crafted migration files, through the whole engine.

Names that carry SQL (``bad"; COMMIT; CREATE ROLE ...``), quotes, dots: each must stay a name.
A migration must make the target exactly the source (``pg_dump -s``, rows, sequences), a second
sync must change nothing, and nothing but the intended objects may exist afterwards (no role a
name tried to create). Real PostgreSQL, the engine's own create and apply paths.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as q

from migration_manager.errors import MigrationError
from tests.factories import edit_manifest
from tests.pgtools import apply_file, make_file, migrate, scalar, sql
from tests.pgtools import rows as pg_rows
from tests.schematools import assert_same, roles, schema_dump, user_schemas

pytestmark = pytest.mark.postgres

OVERWRITE_ALL = {"system": {"default": "overwrite"}, "user": {"default": "overwrite"}}


def _token() -> str:
    return uuid.uuid4().hex[:6]


def _run(dsn: str, *statements: q.Composable | str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def _i(*names: str) -> q.Composable:
    return q.SQL(".").join(q.Identifier(n) for n in names)


def _sync_twice(source: str, target: str, path: Path, **create: Any) -> list[dict[str, Any]]:
    first = migrate(source, target, path, create=create)
    second = migrate(source, target, path, create=create)
    return [first, second]


def _nothing_changed(results: dict[str, Any]) -> None:
    changed = {
        name: (r.status, r.ddl, r.inserted, r.updated, r.deleted)
        for name, r in results.items()
        if r.status != "unchanged" and r.status != "skipped"
    }
    assert changed == {}, "the second sync changed something"


# --------------------------------------------------------------------------- injection


def _hostile_app(dsn: str, tok: str) -> dict[str, str]:
    """A NocoBase-shaped app in a schema whose every name tries to create a role ``mm_pwn_<tok>_*``."""
    names = {
        "schema": f'bad"; COMMIT; CREATE ROLE mm_pwn_{tok}_s; --',
        "table": f"""t"; COMMIT; CREATE ROLE mm_pwn_{tok}_t; --""",
        "column": f"""c'); COMMIT; CREATE ROLE mm_pwn_{tok}_c; --""",
        "index": f'i"; COMMIT; CREATE ROLE mm_pwn_{tok}_i; --',
        "sequence": f"s'::regclass); CREATE ROLE mm_pwn_{tok}_q; --",
        "enum": f'e"; COMMIT; CREATE ROLE mm_pwn_{tok}_e; --',
        "domain": f"d'; COMMIT; CREATE ROLE mm_pwn_{tok}_d; --",
        "label": f"l'); COMMIT; CREATE ROLE mm_pwn_{tok}_l; --",
        "check": f'k"; CREATE ROLE mm_pwn_{tok}_k; --',
        "fk": f'f"; CREATE ROLE mm_pwn_{tok}_f; --',
        "child": f'ch"); CREATE ROLE mm_pwn_{tok}_h; --',
    }
    for what, name in names.items():
        assert len(name.encode()) <= 63, (what, name)
    s = names["schema"]
    _run(
        dsn,
        q.SQL("CREATE SCHEMA {}").format(q.Identifier(s)),
        # what the nocobase profile reads from DB_SCHEMA: collections, version, variables, plugins
        q.SQL(
            'CREATE TABLE {} (name text PRIMARY KEY, options json, "createdAt" timestamptz)'
        ).format(_i(s, "collections")),
        q.SQL("CREATE TABLE {} (id serial PRIMARY KEY, value text)").format(
            _i(s, "applicationVersion")
        ),
        q.SQL("INSERT INTO {} (value) VALUES ('1.9.0')").format(_i(s, "applicationVersion")),
        q.SQL(
            'CREATE TABLE {} (name text PRIMARY KEY, type text, value text, "createdAt" timestamptz, '
            '"updatedAt" timestamptz)'
        ).format(_i(s, "environmentVariables")),
        q.SQL("INSERT INTO {} (name, type, value) VALUES ('API_URL', 'default', 'x')").format(
            _i(s, "environmentVariables")
        ),
        q.SQL(
            'CREATE TABLE {} (name text PRIMARY KEY, "packageName" text, version text, enabled boolean)'
        ).format(_i(s, "applicationPlugins")),
        q.SQL("INSERT INTO {} VALUES ('acl', '@nocobase/plugin-acl', '1.9.0', true)").format(
            _i(s, "applicationPlugins")
        ),
        q.SQL("CREATE TYPE {} AS ENUM ({}, 'plain')").format(
            _i(s, names["enum"]), q.Literal(names["label"])
        ),
        q.SQL("CREATE DOMAIN {} AS {} DEFAULT {} CONSTRAINT {} CHECK (VALUE IS NOT NULL)").format(
            _i(s, names["domain"]),
            _i(s, names["enum"]),
            q.Literal(names["label"]),
            q.Identifier(names["check"]),
        ),
        q.SQL("CREATE SEQUENCE {} START 40").format(_i(s, names["sequence"])),
        q.SQL(
            "CREATE TABLE {} (id integer PRIMARY KEY DEFAULT nextval({}), {} text, mood {}, "
            "flag {} DEFAULT 'plain')"
        ).format(
            _i(s, names["table"]),
            q.Literal(_i(s, names["sequence"]).as_string(None)),
            q.Identifier(names["column"]),
            _i(s, names["domain"]),
            _i(s, names["enum"]),
        ),
        q.SQL("ALTER SEQUENCE {} OWNED BY {}.id").format(
            _i(s, names["sequence"]), _i(s, names["table"])
        ),
        q.SQL("CREATE UNIQUE INDEX {} ON {} (lower({}))").format(
            q.Identifier(names["index"]), _i(s, names["table"]), q.Identifier(names["column"])
        ),
        q.SQL(
            "CREATE TABLE {} (id serial PRIMARY KEY, parent integer CONSTRAINT {} REFERENCES {})"
        ).format(_i(s, names["child"]), q.Identifier(names["fk"]), _i(s, names["table"])),
        q.SQL("INSERT INTO {} ({}, mood) VALUES ('Ann', {}), ('bob', 'plain')").format(
            _i(s, names["table"]), q.Identifier(names["column"]), q.Literal(names["label"])
        ),
        q.SQL("INSERT INTO {} (parent) SELECT id FROM {}").format(
            _i(s, names["child"]), _i(s, names["table"])
        ),
        q.SQL("INSERT INTO {} (name, options) VALUES ({}, '{{}}'), ({}, '{{}}')").format(
            _i(s, "collections"), q.Literal(names["table"]), q.Literal(names["child"])
        ),
    )
    return names


def test_hostile_names_from_a_source_and_from_db_schema_stay_names(
    source: str, target: str, tmp_path: Path
) -> None:
    """Schema (DB_SCHEMA), table, column, index, sequence, enum, label, domain, check and
    foreign key names that each try ``COMMIT; CREATE ROLE``: read through the nocobase profile,
    written to a file, applied twice. No role appears; the target is exactly the source."""
    tok = _token()
    names = _hostile_app(source, tok)
    app_env = {"DB_SCHEMA": names["schema"]}
    path = tmp_path / "m.zip"

    manifest = make_file(source, path, profile="nocobase", rules=OVERWRITE_ALL, app_env=app_env)
    assert manifest["source"]["schema"] == names["schema"]
    assert manifest["source"]["app_version"] == "1.9.0"
    assert manifest["environment"]["variables"] == [
        {"name": "API_URL", "type": "default", "referenced": False}
    ]
    assert [p["name"] for p in manifest["plugins"]] == ["acl"]
    first = apply_file(path, target)
    assert first[names["table"]].status == "applied" and first[names["table"]].inserted == 2
    second = migrate(
        source,
        target,
        path,
        create={"profile": "nocobase", "rules": OVERWRITE_ALL, "app_env": app_env},
    )
    _nothing_changed(second)

    assert roles(f"mm\\_pwn\\_{tok}%") == []
    assert user_schemas(target) == sorted(["public", names["schema"]])
    # NocoBase allows environmentVariables only schema-only: its rows stay the target's (none)
    env_table = (names["schema"], "environmentVariables")
    assert_same(source, target, rows_differ=(env_table,))
    assert scalar(target, q.SQL("SELECT count(*) FROM {}").format(_i(*env_table))) == 0
    # the expression index and the sequence's position arrived too
    assert scalar(
        target,
        "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
        (names["index"],),
    ).startswith("CREATE UNIQUE INDEX")


def _good_file(source: str, tmp_path: Path) -> Path:
    sql(
        source,
        "CREATE TYPE mood AS ENUM ('ok', 'sad'); "
        "CREATE TABLE items (id serial PRIMARY KEY, name text DEFAULT 'x', m mood); "
        "INSERT INTO items (name, m) VALUES ('a', 'ok'), ('b', 'sad');",
    )
    path = tmp_path / "good.zip"
    make_file(source, path, rules={"user": {"default": "overwrite"}})
    return path


def _structure(manifest: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in manifest["tables"] if t["name"] == "items")["structure"]


def _default_stacks(m: dict[str, Any], tok: str) -> None:
    col = next(c for c in _structure(m)["columns"] if c["name"] == "name")
    col["default"] = f"'x'; COMMIT; CREATE ROLE mm_pwn_{tok}_default; SELECT 1"


def _type_stacks(m: dict[str, Any], tok: str) -> None:
    col = next(c for c in _structure(m)["columns"] if c["name"] == "name")
    col["type"] = f"text; COMMIT; CREATE ROLE mm_pwn_{tok}_type; CREATE TABLE zz (a text"


def _sequence_type_stacks(m: dict[str, Any], tok: str) -> None:
    _structure(m)["sequences"][0]["data_type"] = f"integer; COMMIT; CREATE ROLE mm_pwn_{tok}_seq"


def _sequence_number_stacks(m: dict[str, Any], tok: str) -> None:
    _structure(m)["sequences"][0]["increment"] = f"1; COMMIT; CREATE ROLE mm_pwn_{tok}_inc"


def _enum_domain_stacks(m: dict[str, Any], tok: str) -> None:
    t = _structure(m)["types"][0]
    t.update(
        kind="domain",
        base_type=f"text; COMMIT; CREATE ROLE mm_pwn_{tok}_dom; CREATE DOMAIN zz AS text",
        labels=[],
    )


@pytest.mark.parametrize(
    "edit",
    [
        _default_stacks,
        _type_stacks,
        _sequence_type_stacks,
        _sequence_number_stacks,
        _enum_domain_stacks,
    ],
    ids=["column default", "column type", "sequence type", "sequence number", "domain base type"],
)
def test_a_crafted_manifest_cannot_run_a_second_statement(
    edit: Any, source: str, target: str, tmp_path: Path
) -> None:
    """SQL text a forged file puts where the engine expects an expression, a type or a number:
    the apply is refused, no role is created, the target is left as it was (empty)."""
    tok = _token()
    good = _good_file(source, tmp_path)
    forged = edit_manifest(good, tmp_path / "forged.zip", lambda m: edit(m, tok), resum=True)
    before = schema_dump(target)

    with pytest.raises(MigrationError):
        apply_file(forged, target)

    assert roles(f"mm\\_pwn\\_{tok}%") == []
    assert schema_dump(target) == before


def test_a_crafted_schema_name_is_a_schema_name(source: str, target: str, tmp_path: Path) -> None:
    """The issue's example: a manifest naming the schema ``bad"; COMMIT; CREATE ROLE ...``.

    It is a valid schema name: the table is created in a schema of exactly that name; no role."""
    tok = _token()
    good = _good_file(source, tmp_path)
    schema = f'bad"; COMMIT; CREATE ROLE mm_pwn_{tok}_schema; --'

    def to_schema(m: dict[str, Any]) -> None:
        structure = _structure(m)
        structure["schema"] = schema
        for seq in structure["sequences"]:
            seq["schema"] = schema
        structure["columns"][0]["default"] = (
            "nextval("
            + q.Literal(_i(schema, "items_id_seq").as_string(None)).as_string(None)
            + "::regclass)"
        )

    forged = edit_manifest(good, tmp_path / "forged.zip", to_schema, resum=True)
    apply_file(forged, target)

    assert roles(f"mm\\_pwn\\_{tok}%") == []
    assert user_schemas(target) == sorted(["public", schema])
    assert scalar(target, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)) == 1
    with psycopg.connect(target) as conn:
        n = conn.execute(q.SQL("SELECT count(*) FROM {}").format(_i(schema, "items"))).fetchone()
    assert n == (2,)


# --------------------------------------------------------------------------- exact DDL


def test_single_quotes_in_table_column_and_sequence_names_sync_twice(
    source: str, target: str, tmp_path: Path
) -> None:
    """The second sync used to fail in plan: ``relation "it''s_id_seq" does not exist``."""
    sql(
        source,
        """CREATE TABLE "it's" (id serial PRIMARY KEY, "o'k" text DEFAULT 'it''s', n int);
           CREATE INDEX "it's_ix" ON "it's" ("o'k", n);
           INSERT INTO "it's" ("o'k", n) VALUES ('a', 1), ('b''c', 2);""",
    )
    first, second = _sync_twice(source, target, tmp_path / "m.zip", rules=OVERWRITE_ALL)
    assert first["it's"].inserted == 2
    _nothing_changed(second)
    assert_same(source, target)


def test_dotted_table_names_with_a_foreign_key_between_them(
    source: str, target: str, tmp_path: Path
) -> None:
    """``dot.a`` and ``dot.b`` are table names of ``public``, not a schema ``dot``."""
    sql(
        source,
        """CREATE TABLE "dot.a" (id int PRIMARY KEY, "x.y" text UNIQUE);
           CREATE TABLE "dot.b" (id int PRIMARY KEY, a int REFERENCES "dot.a" (id),
                                 ay text REFERENCES "dot.a" ("x.y"), self int REFERENCES "dot.b");
           INSERT INTO "dot.a" VALUES (1, 'one'), (2, 'two');
           INSERT INTO "dot.b" VALUES (1, 1, 'two', NULL), (2, 2, 'one', 1);""",
    )
    first, second = _sync_twice(source, target, tmp_path / "m.zip", rules=OVERWRITE_ALL)
    assert (first["dot.a"].inserted, first["dot.b"].inserted) == (2, 2)
    _nothing_changed(second)
    assert_same(source, target)
    assert user_schemas(target) == ["public"]


def test_db_schema_with_a_double_quote(source: str, target: str, tmp_path: Path) -> None:
    """``create_migration_file`` for a NocoBase app in schema ``my"app`` (it failed with a syntax error)."""
    schema = 'my"app'
    _run(
        source,
        q.SQL("CREATE SCHEMA {}").format(q.Identifier(schema)),
        q.SQL("CREATE TABLE {} (name text PRIMARY KEY, options json)").format(
            _i(schema, "collections")
        ),
        q.SQL("CREATE TABLE {} (id serial PRIMARY KEY, title text)").format(_i(schema, "posts")),
        q.SQL("INSERT INTO {} VALUES ('posts', '{{}}')").format(_i(schema, "collections")),
        q.SQL("INSERT INTO {} (title) VALUES ('hello'), ('world')").format(_i(schema, "posts")),
    )
    create = {"profile": "nocobase", "rules": OVERWRITE_ALL, "app_env": {"DB_SCHEMA": schema}}
    first, second = _sync_twice(source, target, tmp_path / "m.zip", **create)
    assert first["posts"].inserted == 2
    _nothing_changed(second)
    assert_same(source, target)


def test_expression_and_partial_indexes_are_created(
    source: str, target: str, tmp_path: Path
) -> None:
    """``CREATE UNIQUE INDEX ... (lower(email))`` was silently left out: the target lost a rule."""
    sql(
        source,
        """CREATE TABLE users (id int PRIMARY KEY, email text, name text, active boolean);
           CREATE UNIQUE INDEX users_email_ci ON users (lower(email));
           CREATE INDEX users_mixed ON users (name, lower(email), id);
           CREATE UNIQUE INDEX users_active ON users (name) WHERE active;
           INSERT INTO users VALUES (1, 'A@x', 'a', true), (2, 'b@x', 'b', false);""",
    )
    # a target that already has the table without the indexes
    sql(target, "CREATE TABLE users (id int PRIMARY KEY, email text, name text, active boolean)")
    first, second = _sync_twice(source, target, tmp_path / "m.zip", rules=OVERWRITE_ALL)
    assert sum("INDEX" in s for s in first["users"].ddl) == 3
    _nothing_changed(second)
    assert_same(source, target)
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(target, "INSERT INTO users VALUES (3, 'a@X', 'c', false)")


def test_columns_of_a_domain_over_an_enum_keep_their_own_defaults(
    source: str, target: str, tmp_path: Path
) -> None:
    """A column's own default and NOT NULL, not the ones its domain lends it.

    ``plain`` has no default of its own (its domain has one); ``own`` has one equal to the
    domain's, which the target's column lacks at first; ``other`` has its own default; ``strict``
    is of a NOT NULL domain without being NOT NULL itself."""
    types = """CREATE TYPE mood AS ENUM ('happy', 'sad', 'ok');
               CREATE DOMAIN mood_d AS mood DEFAULT 'ok';
               CREATE DOMAIN mood_nn AS mood NOT NULL DEFAULT 'sad';"""
    sql(
        source,
        types
        + """CREATE TABLE t (id int PRIMARY KEY, plain mood_d, own mood_d DEFAULT 'ok',
                             other mood_d DEFAULT 'happy', strict mood_nn,
                             many mood_d[] DEFAULT ARRAY['sad'::mood_d]);
             INSERT INTO t (id) VALUES (1);
             INSERT INTO t VALUES (2, 'sad', 'happy', 'ok', 'happy', '{ok}');""",
    )
    sql(target, types + "CREATE TABLE t (id int PRIMARY KEY, plain mood_d, own mood_d);")
    first, second = _sync_twice(source, target, tmp_path / "m.zip", rules=OVERWRITE_ALL)
    assert first["t"].status == "applied"
    _nothing_changed(second)
    assert_same(source, target)


@pytest.mark.airflow
def test_a_sync_of_a_hostile_app_through_the_dags(
    source: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same hostile app through ``migration_sync`` (``dag.test()``): env_check, env_values
    (reads and writes ``environmentVariables`` in the hostile DB_SCHEMA), plugin_check, the
    backup (fingerprints of every table), the units. Green, no role, target equals source."""
    from tests.airflowtools import connection_uri, run_dag, task_states

    tok = _token()
    names = _hostile_app(source, tok)
    _hostile_app(target, tok)  # the app is installed on the target too, without the variable
    _run(target, q.SQL("DELETE FROM {}").format(_i(names["schema"], "environmentVariables")))
    app_env = {"DB_SCHEMA": names["schema"]}
    monkeypatch.setenv("AIRFLOW_CONN_MIGRATION_SOURCE", connection_uri(source, app_env))
    target_id = f"mm_hostile_{tok}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{target_id.upper()}", connection_uri(target, app_env))

    dag_run = run_dag(
        "migration_sync",
        {
            "profile": "nocobase",
            "rules": OVERWRITE_ALL,
            "target_conn_id": target_id,
            "env_values": {"API_URL": "x"},
            "on_missing_env": "fail",
            "on_missing_plugins": "fail",
        },
    )

    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert states["backup"] == ["success"] and states["env_write"] == ["success"]
    assert roles(f"mm\\_pwn\\_{tok}%") == []
    # environmentVariables is schema-only (NocoBase's rule); env_write stored the answered value
    env_table = (names["schema"], "environmentVariables")
    assert_same(source, target, rows_differ=(env_table,))
    stored = q.SQL("SELECT type, value FROM {}").format(_i(*env_table))
    assert pg_rows(target, stored) == [("default", "x")]


# --------------------------------------------------------------------------- placeholder-like names

# Names a driver could read as bind parameters or format fields (issue 22's regression: a column
# named "%s" failed its unit with 'column "%s" of relation "inj" does not exist').
PLACEHOLDERS = ["%s", "%(x)s", "%%", "a%b", "{}", "{0}", "$1", ":name", "?", "50%"]


def test_placeholder_like_names_sync_exactly_through_every_apply_path(
    source: str, target: str, tmp_path: Path
) -> None:
    """A new table (created, loaded by COPY, keys after the load), the same table merged into
    (rows changed), a second sync (fingerprints: no change), and schema.sql's DDL as run."""
    cols = q.SQL(", ").join(q.SQL("{} text").format(q.Identifier(c)) for c in PLACEHOLDERS)
    _run(
        source,
        q.SQL("CREATE TABLE {} (id int PRIMARY KEY, {})").format(q.Identifier("%s"), cols),
        q.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
            q.Identifier("ix%(x)s"), q.Identifier("%s"), q.Identifier("%s")
        ),
        q.SQL("CREATE TABLE {} (id serial PRIMARY KEY, {} text)").format(
            q.Identifier("?%(y)s"), q.Identifier(":name")
        ),
        q.SQL("INSERT INTO {} ({}) SELECT 'x' || g FROM generate_series(1, 5) g").format(
            q.Identifier("?%(y)s"), q.Identifier(":name")
        ),
        q.SQL("INSERT INTO {} SELECT g, {} FROM generate_series(1, 30) g").format(
            q.Identifier("%s"),
            q.SQL(", ").join(q.SQL("{} || g").format(q.Literal(c)) for c in PLACEHOLDERS),
        ),
    )
    rules = {"rules": OVERWRITE_ALL}
    first = migrate(source, target, tmp_path / "first.zip", create=rules)
    assert first["%s"].status == "applied", first["%s"]
    created = "\n".join(first["%s"].ddl)
    assert '"%s"' in created and '"%%s"' not in created and '"ix%(x)s"' in created
    assert_same(source, target)

    # the merge path: rows changed, one deleted, one new
    _run(
        source,
        q.SQL("UPDATE {} SET {} = 'changed' WHERE id <= 3").format(
            q.Identifier("%s"), q.Identifier("%(x)s")
        ),
        q.SQL("DELETE FROM {} WHERE id = 30").format(q.Identifier("%s")),
        q.SQL("INSERT INTO {} (id, {}) VALUES (31, 'new')").format(
            q.Identifier("%s"), q.Identifier("$1")
        ),
    )
    merged = migrate(source, target, tmp_path / "merge.zip", create=rules)["%s"]
    assert (merged.status, merged.inserted, merged.updated, merged.deleted) == ("applied", 1, 3, 1)
    assert_same(source, target)

    _nothing_changed(migrate(source, target, tmp_path / "again.zip", create=rules))


@pytest.mark.parametrize("schema", ["%s", "50%", "%(x)s"])
def test_environment_values_are_written_into_a_schema_named_like_a_placeholder(
    target: str, schema: str
) -> None:
    """The env_write step's INSERT carries values: the schema's name in it must stay a name (its
    '%' was read as a placeholder once the composed SQL was turned into text)."""
    from migration_manager.checks import write_values

    table = _i(schema, "environmentVariables")
    _run(
        target,
        q.SQL("CREATE SCHEMA {}").format(q.Identifier(schema)),
        q.SQL(
            'CREATE TABLE {} (name text PRIMARY KEY, type text, value text, "createdAt" '
            'timestamptz, "updatedAt" timestamptz)'
        ).format(table),
        q.SQL("INSERT INTO {} (name, type, value) VALUES ('OLD', 'default', 'o')").format(table),
    )
    write_values(
        "nocobase",
        target,
        {"DB_SCHEMA": schema},
        [("API_URL", "default", "%s x"), ("OLD", "secret", ":v")],
    )
    found = pg_rows(
        target,
        q.SQL('SELECT name, type, value, "createdAt" IS NOT NULL FROM {} ORDER BY 1')
        .format(table)
        .as_string(),
    )
    assert found == [("API_URL", "default", "%s x", True), ("OLD", "secret", ":v", False)]
