#!/usr/bin/env node
// Print, as JSON, the collections NocoBase packages declare in code.
//
//   node nocobase_collections.js <package dir>...
//
// Each package dir is an unpacked @nocobase/* package (its package.json at the top). Every
// dist/server/collections/**/*.js file is a CommonJS module whose export is the result of
// `defineCollection({...})` or `extendCollection({...})` from @nocobase/database. The files are
// evaluated, not parsed: @nocobase/database is replaced by a stub that records the options it is
// given, and any other module a file requires that cannot be loaded (a package without its
// dependencies installed) by an inert stand-in. Output: {"packages": {...}, "files": [...],
// "errors": [...]}; the Python side (nocobase_knowledge.py) turns it into the profile's data.
"use strict";

const fs = require("fs");
const path = require("path");
const Module = require("module");

const MARK = Symbol.for("migration-manager.collection");

function inert() {
  // Anything a collection file might touch at load time on a module we could not load.
  const fn = function () {
    return inert();
  };
  return new Proxy(fn, {
    get(_target, prop) {
      if (prop === Symbol.toPrimitive) return () => "";
      if (prop === "then") return undefined;
      if (prop === "__esModule") return true;
      return inert();
    },
    apply() {
      return inert();
    },
    construct() {
      return inert();
    },
  });
}

const databaseStub = {
  __esModule: true,
  defineCollection(options) {
    return { [MARK]: "define", options };
  },
  extendCollection(options, mergeOptions) {
    return { [MARK]: "extend", options, mergeOptions };
  },
};

const originalLoad = Module._load;
Module._load = function (request, parent, isMain) {
  if (request === "@nocobase/database") return databaseStub;
  try {
    return originalLoad.call(this, request, parent, isMain);
  } catch (err) {
    if (err && err.code === "MODULE_NOT_FOUND") return inert();
    throw err;
  }
};

const RELATIONS = new Set(["belongsToMany", "hasMany", "belongsTo", "hasOne"]);
const RELATION_KEYS = ["name", "type", "target", "through", "foreignKey", "otherKey", "sourceKey", "targetKey"];

function plain(value) {
  // JSON-safe copy of a rule value (strings, arrays, plain objects); functions are dropped.
  if (value === undefined || typeof value === "function") return undefined;
  try {
    return JSON.parse(JSON.stringify(value));
  } catch (_err) {
    return undefined;
  }
}

function describe(kind, options) {
  const out = { kind, name: options.name };
  for (const key of ["tableName", "dumpRules", "migrationRules", "tree", "inherits", "origin", "shared"]) {
    const v = plain(options[key]);
    if (v !== undefined) out[key] = v;
  }
  const relations = [];
  for (const field of Array.isArray(options.fields) ? options.fields : []) {
    if (!field || !RELATIONS.has(field.type)) continue;
    const rel = {};
    for (const key of RELATION_KEYS) {
      if (typeof field[key] === "string") rel[key] = field[key];
    }
    relations.push(rel);
  }
  out.relations = relations;
  // fields the app identifies rows by besides the key (storages.name): unique, not the key
  out.unique = (Array.isArray(options.fields) ? options.fields : [])
    .filter((f) => f && f.unique === true && !f.primaryKey && typeof f.name === "string")
    .map((f) => f.name);
  return out;
}

function exported(mod) {
  const candidates = [mod, mod && mod.default];
  for (const c of [...candidates]) {
    // A few files export a function that returns the definition (plugin-workflow's workflowTasks).
    if (typeof c === "function" && !(MARK in c)) {
      try {
        candidates.push(c());
      } catch (_err) {
        // not a definition factory
      }
    }
  }
  for (const c of candidates) {
    if (c && c[MARK]) return { kind: c[MARK], options: c.options };
  }
  for (const c of candidates) {
    // Older files export the plain options object.
    if (c && typeof c === "object" && typeof c.name === "string" && Array.isArray(c.fields)) {
      return { kind: "define", options: c };
    }
  }
  return null;
}

function walk(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(p));
    else if (entry.isFile() && entry.name.endsWith(".js")) out.push(p);
  }
  return out.sort();
}

function main(dirs) {
  const result = { packages: {}, files: [], errors: [] };
  for (const dir of dirs) {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
    const collections = path.join(dir, "dist", "server", "collections");
    // @nocobase/server declares applicationPlugins here (its other tables are in the docs' list).
    const core = path.join(dir, "lib", "plugin-manager", "options", "collection.js");
    const files = [
      ...(fs.existsSync(collections) ? walk(collections) : []),
      ...(fs.existsSync(core) ? [core] : []),
    ];
    if (!files.length) continue;
    result.packages[pkg.name] = pkg.version;
    for (const file of files) {
      const rel = path.relative(dir, file).split(path.sep).join("/");
      let mod;
      try {
        mod = require(path.resolve(file));
      } catch (err) {
        result.errors.push({ package: pkg.name, file: rel, error: String(err && err.message) });
        continue;
      }
      const found = exported(mod);
      if (!found || typeof found.options !== "object" || typeof found.options.name !== "string") {
        result.errors.push({ package: pkg.name, file: rel, error: "no defineCollection/extendCollection export" });
        continue;
      }
      result.files.push({ package: pkg.name, file: rel, ...describe(found.kind, found.options) });
    }
  }
  return result;
}

process.stdout.write(JSON.stringify(main(process.argv.slice(2)), null, 1) + "\n");
