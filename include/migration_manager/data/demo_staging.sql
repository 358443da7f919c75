-- Staging: configuration work that should reach prod.
-- A user-defined collection "orders" (snowflake id, jsonb, text[]) with 50,000 rows,
-- a tree collection "regions" and its key-less path table, a new field on users,
-- new pages (uiSchemas + desktopRoutes), an edited block, a new plugin, a dynamic env variable.

ALTER TABLE users ADD COLUMN department varchar(255);
INSERT INTO users (nickname, username, email, department) VALUES ('Dana', 'dana', 'dana@example.com', 'Support');

CREATE TABLE orders (
    id bigint PRIMARY KEY, "createdAt" timestamptz NOT NULL, "updatedAt" timestamptz, "customerName" varchar(255),
    status varchar(32), total numeric(12, 2), items jsonb, tags text[], note text
);
CREATE INDEX orders_status ON orders (status);
INSERT INTO orders
SELECT 300000000000000 + g, timestamptz '2026-01-01 00:00:00+00' + g * interval '7 minutes', NULL,
       'Customer ' || (g % 997), (ARRAY['new', 'paid', 'shipped', 'closed'])[1 + g % 4], (g % 1000) * 1.25,
       jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (g % 50), 'qty', 1 + g % 3)),
       ARRAY['web', CASE WHEN g % 2 = 0 THEN 'promo' ELSE 'regular' END],
       CASE WHEN g % 100 = 0 THEN 'Ünïcödé ✓ 注文 ' || g END
FROM generate_series(1, 50000) g;
CREATE TABLE regions (id bigint PRIMARY KEY, "parentId" bigint, name varchar(255));
INSERT INTO regions VALUES (1, NULL, 'Europe'), (2, 1, 'France'), (3, 1, 'Germany'), (4, NULL, 'Asia');
CREATE TABLE "main_regions_path" ("nodePk" bigint, path varchar(1024), "rootPk" bigint);
INSERT INTO "main_regions_path" VALUES (1, '/1', 1), (2, '/1/2', 1), (3, '/1/3', 1), (4, '/4', 4);
INSERT INTO collections VALUES
    ('c-orders', 'orders', 'Orders', '{"template":"general","autoGenId":false}', 3),
    ('c-regions', 'regions', 'Regions', '{"template":"tree","tree":"adjacencyList"}', 4);
INSERT INTO fields
SELECT 'f-orders-' || c, c, 'string', 'input', 'orders', '{}', 200 + ordinality
FROM unnest(ARRAY['customerName', 'status', 'total', 'items', 'tags', 'note']) WITH ORDINALITY AS c;
INSERT INTO fields VALUES ('f-users-department', 'department', 'string', 'input', 'users', '{"uiSchema":{"title":"Department"}}', 300);

INSERT INTO "uiSchemas" VALUES ('orders-page', 'orders', '{"type":"void","x-component":"Page","title":"Orders"}'),
                               ('orders-table', 'table', '{"type":"array","x-component":"TableV2","x-decorator":"TableBlockProvider"}');
INSERT INTO "uiSchemaTreePath" VALUES ('orders-page', 'orders-page', 0, false, NULL, NULL),
                                      ('orders-table', 'orders-table', 0, false, NULL, NULL),
                                      ('orders-page', 'orders-table', 1, false, 'properties', 1);
UPDATE "uiSchemas" SET schema = '{"type":"void","x-component":"CardItem","title":"Renamed block 7"}' WHERE "x-uid" = 'uid-000007';
INSERT INTO "desktopRoutes" VALUES (410000000000001, NULL, 'Orders', 'page', 'orders-page', 1),
                                   (410000000000002, 410000000000001, 'All orders', 'tabs', 'orders-table', 1);
INSERT INTO "main_desktopRoutes_path" VALUES (410000000000001, '/410000000000001', 410000000000001),
                                             (410000000000002, '/410000000000001/410000000000002', 410000000000001);
INSERT INTO "applicationPlugins" (name, "packageName", version, enabled, installed, "builtIn")
VALUES ('graph-collection-manager', '@nocobase/plugin-graph-collection-manager', '2.2.15', true, true, false);
INSERT INTO "environmentVariables" VALUES (now(), now(), 'ORDERS_API_URL', 'default', 'https://orders.example.invalid/api');
