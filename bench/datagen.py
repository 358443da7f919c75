"""NocoBase-shaped benchmark tables, generated server-side with ``generate_series``.

Every table is described by a :class:`Table`: its DDL, the SQL that inserts the rows numbered
``lo..hi`` (row ``g`` is always the same row, so a target can be rebuilt with "the same data"
and rows beyond the source's count are new), and the SQL that turns a copy of the source into
an older "previous" state of it: about 10 % of the rows changed, 5 % missing (the migration
inserts them) and 5 % extra (overwrite deletes them, upsert keeps them).

Row counts at ``scale`` 1.0::

    "uiSchemas"          300 k   "x-uid" varchar key, schema json
    "uiSchemaTreePath"   600 k   (ancestor, descendant) varchar key, depth, async, type, sort
    fields               100 k   key varchar, options json, "collectionName"
    orders              1000 k   bigint snowflake-like key (no sequence), jsonb, text[],
                                 timestamptz, numeric
    "requestLogs"        200 k   no primary key
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_ROWS = {
    "uiSchemas": 300_000,
    "uiSchemaTreePath": 600_000,
    "fields": 100_000,
    "orders": 1_000_000,
    "requestLogs": 200_000,
}
TABLES = tuple(BASE_ROWS)


def _uid(prefix: str, expr: str) -> str:
    """A unique NocoBase-like string id for the integer ``expr`` (hex of it, then a hash)."""
    return f"('{prefix}' || to_hex({expr}) || substr(md5(({expr})::text), 1, 7))"


def _bucket(expr: str) -> str:
    """0..19, a stable pseudo-random bucket of a row (for choosing 10 % / 5 % of the rows)."""
    return f"(abs(hashtext(({expr})::text)) % 20)"


@dataclass(frozen=True)
class Table:
    name: str
    ddl: str  # CREATE TABLE without the primary key (added after the load: faster)
    key_ddl: str | None  # ALTER TABLE ... ADD PRIMARY KEY, or None
    select: str  # SELECT producing the row of number g (from generate_series(lo, hi) AS g)
    change: str  # UPDATE statement changing ~10 % of the rows
    delete: str  # DELETE statement removing ~5 % of the rows

    @property
    def ident(self) -> str:
        return f'"{self.name}"'

    def insert_sql(self, lo: int, hi: int) -> str:
        return (
            f"INSERT INTO {self.ident} SELECT {self.select} FROM generate_series({lo}, {hi}) AS g"
        )


UI_SCHEMAS = Table(
    name="uiSchemas",
    ddl='CREATE TABLE "uiSchemas" ("x-uid" varchar(255) NOT NULL, name varchar(255), schema json)',
    key_ddl='ALTER TABLE "uiSchemas" ADD PRIMARY KEY ("x-uid")',
    select=(
        f"{_uid('u', 'g')}, substr(md5(g::text || 'n'), 1, 11), "
        "json_build_object("
        "'type', 'void', "
        "'x-component', (ARRAY['Grid', 'Grid.Row', 'Grid.Col', 'CardItem', 'Action', "
        "'FormItem', 'TableV2.Column'])[1 + g % 7], "
        "'x-decorator', (ARRAY['BlockItem', 'FormItem', 'TableV2.Column.Decorator'])[1 + g % 3], "
        "'x-settings', 'blockSettings:table', "
        "'x-toolbar', 'BlockSchemaToolbar', "
        "'x-async', g % 11 = 0, "
        "'x-index', g % 13, "
        "'x-component-props', json_build_object('title', 'Block ' || g, "
        "'style', json_build_object('marginBottom', g % 24), 'size', 'small'), "
        "'x-decorator-props', json_build_object('collection', 'c' || (g % 97), "
        "'action', 'list'), "
        "'properties', json_build_object())"
    ),
    change=(
        "UPDATE \"uiSchemas\" SET schema = json_build_object('type', 'void', "
        "'x-component', 'Grid', 'x-index', 0), name = 'old' "
        f"WHERE {_bucket(chr(34) + 'x-uid' + chr(34))} < 2"
    ),
    delete=f'DELETE FROM "uiSchemas" WHERE {_bucket(chr(34) + "x-uid" + chr(34))} = 2',
)

# Row g belongs to node k = (g + 1) / 2: odd g is the node's self path (depth 0), even g its
# path from its parent k / 8 (depth 1). The key (ancestor, descendant) is unique.
UI_SCHEMA_TREE_PATH = Table(
    name="uiSchemaTreePath",
    ddl=(
        'CREATE TABLE "uiSchemaTreePath" (ancestor varchar(255) NOT NULL, '
        "descendant varchar(255) NOT NULL, depth integer, async boolean, "
        "type varchar(255), sort integer)"
    ),
    key_ddl='ALTER TABLE "uiSchemaTreePath" ADD PRIMARY KEY (ancestor, descendant)',
    select=(
        f"CASE WHEN g % 2 = 1 THEN {_uid('u', '(g + 1) / 2')} "
        f"ELSE {_uid('u', '(g / 2) / 8')} END, "
        f"{_uid('u', '(g + 1) / 2')}, "
        "1 - g % 2, g % 11 = 0, "
        "CASE WHEN g % 2 = 1 THEN NULL ELSE 'properties' END, "
        "(g / 2) % 16"
    ),
    change=(
        'UPDATE "uiSchemaTreePath" SET sort = sort + 100, async = NOT async '
        "WHERE " + _bucket("ancestor || '/' || descendant") + " < 2"
    ),
    delete='DELETE FROM "uiSchemaTreePath" WHERE '
    + _bucket("ancestor || '/' || descendant")
    + " = 2",
)

FIELDS = Table(
    name="fields",
    ddl=(
        "CREATE TABLE fields (key varchar(255) NOT NULL, name varchar(255), "
        'type varchar(255), interface varchar(255), "collectionName" varchar(255), '
        'description varchar(255), "reverseKey" varchar(255), options json, sort integer)'
    ),
    key_ddl="ALTER TABLE fields ADD PRIMARY KEY (key)",
    select=(
        f"{_uid('f', 'g')}, 'f_' || g, "
        "(ARRAY['string', 'bigInt', 'belongsTo', 'hasMany', 'date', 'boolean', 'json'])[1 + g % 7], "
        "(ARRAY['input', 'integer', 'm2o', 'o2m', 'datetime', 'checkbox', 'json'])[1 + g % 7], "
        "'c' || (g % 997), "
        "CASE WHEN g % 4 = 0 THEN 'Field number ' || g END, "
        "CASE WHEN g % 7 IN (2, 3) THEN " + _uid("r", "g") + " END, "
        "json_build_object('uiSchema', json_build_object('type', 'string', "
        "'title', 'Field ' || g, 'x-component', 'Input', "
        "'x-component-props', json_build_object('placeholder', md5(g::text))), "
        "'targetKey', 'id', 'foreignKey', 'f_' || g || '_id', 'onDelete', 'SET NULL', "
        "'defaultValue', CASE WHEN g % 5 = 0 THEN to_json(g % 100) END), "
        "g % 50"
    ),
    change=(
        "UPDATE fields SET options = json_build_object('uiSchema', json_build_object("
        "'title', 'Old title')), description = 'old description' "
        "WHERE " + _bucket("key") + " < 2"
    ),
    delete="DELETE FROM fields WHERE " + _bucket("key") + " = 2",
)

# Snowflake-like id: milliseconds since 1970 in the high bits, a sequence number in the low
# 22. Unique per g, increasing, no sequence involved (upsert refuses serial/identity keys).
ORDERS = Table(
    name="orders",
    ddl=(
        'CREATE TABLE orders (id bigint NOT NULL, "createdAt" timestamptz NOT NULL, '
        '"updatedAt" timestamptz NOT NULL, status varchar(32) NOT NULL, '
        '"customerId" bigint, total numeric(12, 2), currency varchar(3), tags text[], '
        "data jsonb, note text)"
    ),
    key_ddl="ALTER TABLE orders ADD PRIMARY KEY (id)",
    select=(
        "((1700000000000::bigint + g * 61) << 22) | (g % 4096), "
        "timestamptz '2024-01-01 00:00:00+00' + g * interval '17 seconds', "
        "timestamptz '2024-01-01 00:00:00+00' + g * interval '19 seconds', "
        "(ARRAY['pending', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 5], "
        "1 + (g::bigint * 7919) % 50000, "
        "((g::bigint * 37) % 1000000) / 100.0, "
        "(ARRAY['EUR', 'USD', 'CNY'])[1 + g % 3], "
        "ARRAY['tag' || (g % 17), 'channel' || (g % 5)], "
        "jsonb_build_object('items', jsonb_build_array("
        "jsonb_build_object('sku', 'SKU-' || (g % 1000), 'qty', 1 + g % 5)), "
        "'city', 'City ' || (g % 300), 'express', g % 4 = 0), "
        "CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || (g % 1000) END"
    ),
    change=(
        "UPDATE orders SET status = 'old', \"updatedAt\" = \"updatedAt\" - interval '1 day', "
        "data = data || '{\"old\": true}' WHERE " + _bucket("id") + " < 2"
    ),
    delete="DELETE FROM orders WHERE " + _bucket("id") + " = 2",
)

REQUEST_LOGS = Table(
    name="requestLogs",
    ddl=(
        'CREATE TABLE "requestLogs" ("createdAt" timestamptz, method varchar(8), '
        'path varchar(255), status integer, "durationMs" integer, "userId" bigint, '
        '"userAgent" text)'
    ),
    key_ddl=None,
    select=(
        "timestamptz '2024-06-01 00:00:00+00' + g * interval '250 milliseconds', "
        "(ARRAY['GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE'])[1 + g % 6], "
        "'/api/c' || (g % 97) || ':' || (ARRAY['list', 'get', 'create', 'update'])[1 + g % 4], "
        "(ARRAY[200, 200, 200, 201, 204, 400, 404, 500])[1 + g % 8], "
        "(g::bigint * 13) % 2000, "
        "1 + g % 500, "
        "'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/' || (100 + g % 30)"
    ),
    change=(
        'UPDATE "requestLogs" SET status = 599 WHERE '
        + _bucket('"createdAt"::text || path')
        + " < 2"
    ),
    delete='DELETE FROM "requestLogs" WHERE ' + _bucket('"createdAt"::text || path') + " = 2",
)

ALL = {t.name: t for t in (UI_SCHEMAS, UI_SCHEMA_TREE_PATH, FIELDS, ORDERS, REQUEST_LOGS)}


def rows_at(scale: float) -> dict[str, int]:
    return {name: max(1, round(n * scale)) for name, n in BASE_ROWS.items()}


def create_sql(table: Table, n: int, *, with_key_first: bool = False) -> list[str]:
    """Statements creating and filling ``table`` with rows 1..n (key added after the load)."""
    stmts = [table.ddl]
    if with_key_first and table.key_ddl:
        stmts.append(table.key_ddl)
    stmts.append(table.insert_sql(1, n))
    if table.key_ddl and not with_key_first:
        stmts.append(table.key_ddl)
    return stmts


def empty_sql(table: Table) -> list[str]:
    """The same DDL, no rows: for the baseline's target."""
    return [table.ddl] + ([table.key_ddl] if table.key_ddl else [])


def previous_state_sql(table: Table, n: int) -> list[str]:
    """Turn a copy of the source table (rows 1..n) into its "previous" state in the target:
    ~10 % of rows changed, ~5 % missing, plus ~5 % (n / 20) rows the source does not have."""
    extra = max(1, n // 20)
    return [
        table.change,
        table.delete,
        table.insert_sql(n + 1, n + extra),
    ]
