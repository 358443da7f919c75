-- A small application shaped like NocoBase (camelCase quoted names, string keys with hyphens,
-- composite keys, serial and snowflake ids, a key-less tree path table, json/jsonb, arrays).
-- Loaded into both demo databases; demo_staging.sql / demo_prod.sql then make them differ.

CREATE TABLE "applicationPlugins" (
    id serial PRIMARY KEY, "createdAt" timestamptz NOT NULL DEFAULT now(), "updatedAt" timestamptz NOT NULL DEFAULT now(),
    name varchar(255) UNIQUE, "packageName" varchar(255) UNIQUE, version varchar(255),
    enabled boolean, installed boolean, "builtIn" boolean, options json DEFAULT '{}'::json
);
CREATE TABLE "applicationVersion" (id serial PRIMARY KEY, value varchar(255));
CREATE TABLE "systemSettings" (id serial PRIMARY KEY, title varchar(255), "appLang" varchar(255), options json DEFAULT '{}'::json);
CREATE TABLE "uiSchemas" ("x-uid" varchar(255) PRIMARY KEY, name varchar(255), schema json);
CREATE TABLE "uiSchemaTreePath" (
    ancestor varchar(255) NOT NULL, descendant varchar(255) NOT NULL, depth integer, async boolean, type varchar(255), sort integer,
    PRIMARY KEY (ancestor, descendant)
);
CREATE INDEX "uiSchemaTreePath_descendant" ON "uiSchemaTreePath" (descendant);
CREATE TABLE collections (key varchar(255) PRIMARY KEY, name varchar(255) UNIQUE, title varchar(255), options json DEFAULT '{}'::json, sort bigint);
CREATE TABLE fields (
    key varchar(255) PRIMARY KEY, name varchar(255), type varchar(255), interface varchar(255),
    "collectionName" varchar(255), options json DEFAULT '{}'::json, sort bigint
);
CREATE INDEX fields_collection_name ON fields ("collectionName");
CREATE TABLE roles (name varchar(255) PRIMARY KEY, title varchar(255), strategy json, "default" boolean DEFAULT false);
CREATE TABLE users (
    id bigserial PRIMARY KEY, "createdAt" timestamptz DEFAULT now(), nickname varchar(255), username varchar(255) UNIQUE, email varchar(255)
);
CREATE TABLE "rolesUsers" ("roleName" varchar(255) NOT NULL, "userId" bigint NOT NULL, "default" boolean, PRIMARY KEY ("roleName", "userId"));
CREATE TABLE "desktopRoutes" (id bigint PRIMARY KEY, "parentId" bigint, title varchar(255), type varchar(255), "schemaUid" varchar(255), sort bigint);
CREATE TABLE "main_desktopRoutes_path" ("nodePk" bigint, path varchar(1024), "rootPk" bigint);
CREATE TABLE "environmentVariables" ("createdAt" timestamptz NOT NULL, "updatedAt" timestamptz NOT NULL,
                                     name varchar(255) PRIMARY KEY, type varchar(255), value text);

INSERT INTO "applicationVersion" (value) VALUES ('2.2.15');
INSERT INTO "applicationPlugins" (name, "packageName", version, enabled, installed, "builtIn")
SELECT p, '@nocobase/plugin-' || p, '2.2.15', true, true, true
FROM unnest(ARRAY['acl', 'users', 'auth', 'ui-schema-storage', 'collection-manager', 'data-source-main', 'system-settings',
                  'file-manager', 'workflow', 'environment-variables', 'backup-restore', 'migration-manager']) AS p;
INSERT INTO roles VALUES ('root', '{{t("Root")}}', '{"actions":["*"]}', false),
                         ('admin', '{{t("Admin")}}', '{"actions":["create","view","update","destroy"]}', false),
                         ('member', '{{t("Member")}}', '{"actions":["view"]}', true);
INSERT INTO users (nickname, username, email) VALUES ('Super Admin', 'nocobase', 'admin@nocobase.com');
INSERT INTO "rolesUsers" VALUES ('root', 1, true), ('admin', 1, false), ('member', 1, false);
INSERT INTO "uiSchemas"
SELECT 'uid-' || lpad(g::text, 6, '0'), 'block' || g,
       json_build_object('type', 'void', 'x-component', 'CardItem', 'x-decorator', 'BlockItem', 'title', 'Block ' || g, 'x-index', g)
FROM generate_series(1, 3000) g;
INSERT INTO "uiSchemaTreePath"
SELECT 'uid-' || lpad(g::text, 6, '0'), 'uid-' || lpad(g::text, 6, '0'), 0, false, NULL, NULL FROM generate_series(1, 3000) g
UNION ALL
SELECT 'uid-' || lpad(((g - 1) / 10 + 1)::text, 6, '0'), 'uid-' || lpad(g::text, 6, '0'), 1, false, 'properties', g % 10
FROM generate_series(11, 3000) g;
INSERT INTO collections VALUES
    ('c-users', 'users', '{{t("Users")}}', '{"origin":"@nocobase/plugin-users","migrationRules":["schema-only","overwrite","skip"]}', 1),
    ('c-roles', 'roles', '{{t("Roles")}}', '{"origin":"@nocobase/plugin-acl","migrationRules":["overwrite","schema-only"]}', 2);
INSERT INTO fields
SELECT 'f-' || g, 'field' || g, 'string', 'input', CASE WHEN g % 2 = 0 THEN 'users' ELSE 'roles' END,
       json_build_object('uiSchema', json_build_object('title', 'Field ' || g)), g
FROM generate_series(1, 40) g;
INSERT INTO fields VALUES ('f-roles-users', 'roles', 'belongsToMany', 'm2m', 'users',
                           '{"target":"roles","through":"rolesUsers","foreignKey":"userId","otherKey":"roleName"}', 100);
INSERT INTO "systemSettings" (title, "appLang", options) VALUES ('NocoBase', 'en-US', '{"raw":{"theme":"default"}}');
