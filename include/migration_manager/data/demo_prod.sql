-- Prod: runtime data of its own that a migration must keep (users) or replace (settings).
INSERT INTO users (nickname, username, email) VALUES ('Petra', 'petra', 'petra@example.com'),
                                                     ('Quentin', 'quentin', 'quentin@example.com');
INSERT INTO "rolesUsers" VALUES ('admin', 2, true), ('member', 3, true);
UPDATE "systemSettings" SET title = 'Prod';
DELETE FROM "uiSchemas" WHERE "x-uid" IN ('uid-002999', 'uid-003000');
DELETE FROM "uiSchemaTreePath" WHERE descendant IN ('uid-002999', 'uid-003000');
