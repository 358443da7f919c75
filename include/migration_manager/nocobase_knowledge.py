"""What NocoBase's own code says about its tables, per NocoBase version.

Every NocoBase plugin declares its collections in code: ``dist/server/collections/*.js`` in each
``@nocobase/*`` package calls ``defineCollection({...})`` or ``extendCollection({...})`` with the
collection's ``name``, ``dumpRules``, ``migrationRules`` (the metadata NocoBase's own Migration
Manager reads; the first rule is the default) and its fields, among them relations whose
``through`` tables no ``fields`` row mentions (``desktopRoutes.uiLayouts`` through
``desktopRoutesUiLayouts``). This module turns those files into the ``nocobase`` profile's table
knowledge, one JSON file per minor version under ``data/nocobase/`` (``nocobase_packages.py``
generates them from the packages).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from migration_manager.config import RULES
from migration_manager.errors import ConfigError

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).with_name("data") / "nocobase"
KNOWLEDGE_FORMAT = 1


@dataclass(frozen=True)
class CodeCollection:
    """One collection as NocoBase's code declares it (definition and extensions merged)."""

    name: str
    table: str  # tableName, else name
    defined_by: str | None  # package whose defineCollection declares it (None: only extended)
    extended_by: tuple[str, ...] = ()
    migration_rules: tuple[str, ...] = ()  # first = default
    dump_rules: str | dict[str, Any] | None = None
    tree: str | None = None
    unique: tuple[str, ...] = ()  # fields besides the key that identify a row (storages.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "unique": list(self.unique),
            "defined_by": self.defined_by,
            "extended_by": list(self.extended_by),
            "migrationRules": list(self.migration_rules),
            "dumpRules": self.dump_rules,
            "tree": self.tree,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> CodeCollection:
        return cls(
            name=name,
            table=str(d.get("table") or name),
            defined_by=d.get("defined_by"),
            extended_by=tuple(d.get("extended_by") or ()),
            migration_rules=tuple(d.get("migrationRules") or ()),
            dump_rules=d.get("dumpRules"),
            tree=d.get("tree"),
            unique=tuple(d.get("unique") or ()),
        )


@dataclass(frozen=True)
class Reference:
    """A column whose values are another collection's keys (a belongsTo/hasOne/hasMany in code)."""

    collection: str  # holds the column
    column: str  # the foreign key, as a field name
    target: str  # the collection referred to
    target_key: str  # its field the values are ("": its primary key, Sequelize's default)
    declared_by: str  # "package: collection.field"

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "column": self.column,
            "target": self.target,
            "target_key": self.target_key,
            "declared_by": self.declared_by,
        }


def references_of(rec: dict[str, Any]) -> list[Reference]:
    """The foreign keys one collection file's relations declare (those NocoBase names plainly)."""
    out = []
    for rel in rec.get("relations") or []:
        kind, name = rel.get("type"), rel.get("name") or ""
        target = rel.get("target") or name
        by = f"{rec['package']}: {rec['name']}.{name}"
        if kind == "belongsTo":
            fk = rel.get("foreignKey") or f"{name}Id"
            out.append(Reference(rec["name"], fk, target, rel.get("targetKey") or "", by))
        elif kind in ("hasMany", "hasOne") and rel.get("foreignKey"):
            key = rel.get("sourceKey") or ""
            out.append(Reference(target, rel["foreignKey"], rec["name"], key, by))
    return out


@dataclass(frozen=True)
class ThroughTable:
    """An m2m through table declared by a relation in code."""

    name: str
    sides: tuple[str, ...]  # the collections it links (one when a collection links itself)
    declared_by: tuple[str, ...]  # "package: collection.field"
    keys: tuple[str, ...] = ()  # foreignKey, otherKey as declared

    def to_dict(self) -> dict[str, Any]:
        return {
            "sides": list(self.sides),
            "declared_by": list(self.declared_by),
            "keys": list(self.keys),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> ThroughTable:
        return cls(
            name=name,
            sides=tuple(d.get("sides") or ()),
            declared_by=tuple(d.get("declared_by") or ()),
            keys=tuple(d.get("keys") or ()),
        )


@dataclass(frozen=True)
class Knowledge:
    """The table knowledge of one NocoBase version."""

    version: str  # the NocoBase version the packages had, e.g. 2.2.15
    source: str  # "npm registry" or "node_modules"
    generated_at: str
    packages: dict[str, str]  # package -> version, those with collection files
    collections: dict[str, CodeCollection]
    through: dict[str, ThroughTable]
    skipped: tuple[str, ...] = field(default=())  # files that did not evaluate to a definition
    references: tuple[Reference, ...] = ()

    @property
    def minor(self) -> str:
        return minor_of(self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": KNOWLEDGE_FORMAT,
            "nocobase_version": self.version,
            "minor": self.minor,
            "source": self.source,
            "generated_at": self.generated_at,
            "generator": "python -m migration_manager.nocobase_knowledge",
            "packages": dict(sorted(self.packages.items())),
            "collections": {k: self.collections[k].to_dict() for k in sorted(self.collections)},
            "through_tables": {k: self.through[k].to_dict() for k in sorted(self.through)},
            "references": [r.to_dict() for r in self.references],
            "skipped_files": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Knowledge:
        return cls(
            version=str(d["nocobase_version"]),
            source=str(d.get("source") or ""),
            generated_at=str(d.get("generated_at") or ""),
            packages=dict(d.get("packages") or {}),
            collections={
                k: CodeCollection.from_dict(k, v) for k, v in (d.get("collections") or {}).items()
            },
            through={
                k: ThroughTable.from_dict(k, v) for k, v in (d.get("through_tables") or {}).items()
            },
            skipped=tuple(d.get("skipped_files") or ()),
            references=tuple(Reference(**r) for r in d.get("references") or ()),
        )


def minor_of(version: str) -> str:
    m = re.match(r"\s*v?(\d+)\.(\d+)", version)
    if not m:
        raise ConfigError(f"NocoBase version {version!r} is not of the form MAJOR.MINOR[.PATCH]")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def _minor_key(minor: str) -> tuple[int, int]:
    major, _, rest = minor.partition(".")
    return int(major), int(rest)


def camelize(text: str) -> str:
    """Sequelize's ``Utils.camelize`` (``roles_users`` -> ``rolesUsers``)."""
    return re.sub(r"[-_\s]+(.)?", lambda m: (m.group(1) or "").upper(), text.strip())


def default_through(collection: str, target: str) -> str:
    """The through table NocoBase names for a belongsToMany without ``through``."""
    return camelize("_".join(sorted(n.lower() for n in (collection, target))))


# -- building the knowledge from the extractor's output


def build(raw: dict[str, Any], version: str, source: str) -> Knowledge:
    """Merge the extractor's per-file records into collections and through tables."""
    defines: dict[str, dict[str, Any]] = {}
    extends: dict[str, list[dict[str, Any]]] = {}
    for rec in raw.get("files") or []:
        if rec.get("kind") == "define":
            if rec["name"] in defines:
                log.warning(
                    "%s is defined by both %s and %s; keeping the first",
                    rec["name"],
                    defines[rec["name"]]["package"],
                    rec["package"],
                )
                continue
            defines[rec["name"]] = rec
        else:
            extends.setdefault(rec["name"], []).append(rec)

    collections: dict[str, CodeCollection] = {}
    for name in sorted(set(defines) | set(extends)):
        base = defines.get(name)
        exts = extends.get(name, [])
        records = ([base] if base else []) + exts
        # the definition's migrationRules; an extension's only when the definition has none
        rules: tuple[str, ...] = ()
        for rec in records:
            found = rec.get("migrationRules")
            if isinstance(found, list) and found:
                unknown = [r for r in found if r not in RULES]
                if unknown:
                    raise ConfigError(
                        f"{rec['package']} {rec['file']}: migrationRules has unknown rule(s) "
                        f"{', '.join(map(str, unknown))}; the known rules are {', '.join(RULES)}"
                    )
                rules = tuple(dict.fromkeys(found))
                break
        collections[name] = CodeCollection(
            name=name,
            table=str(next((r["tableName"] for r in records if r.get("tableName")), name)),
            defined_by=base["package"] if base else None,
            extended_by=tuple(sorted({r["package"] for r in exts})),
            migration_rules=rules,
            dump_rules=next((r["dumpRules"] for r in records if "dumpRules" in r), None),
            tree=next((str(r["tree"]) for r in records if r.get("tree")), None),
            unique=tuple(dict.fromkeys(u for r in records for u in r.get("unique") or ())),
        )

    through: dict[str, dict[str, Any]] = {}
    for rec in raw.get("files") or []:
        for rel in rec.get("relations") or []:
            if rel.get("type") != "belongsToMany":
                continue
            target = rel.get("target") or rel.get("name")
            table = rel.get("through") or default_through(rec["name"], target)
            entry = through.setdefault(table, {"sides": set(), "declared_by": [], "keys": []})
            entry["sides"].update((rec["name"], target))
            entry["declared_by"].append(f"{rec['package']}: {rec['name']}.{rel.get('name')}")
            for key in ("foreignKey", "otherKey"):
                if rel.get(key) and rel[key] not in entry["keys"]:
                    entry["keys"].append(rel[key])
    return Knowledge(
        version=version,
        source=source,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        packages={str(k): str(v) for k, v in (raw.get("packages") or {}).items()},
        collections=collections,
        through={
            name: ThroughTable(
                name=name,
                sides=tuple(sorted(e["sides"])),
                declared_by=tuple(sorted(set(e["declared_by"]))),
                keys=tuple(e["keys"]),
            )
            for name, e in through.items()
        },
        skipped=tuple(f"{e['package']} {e['file']}: {e['error']}" for e in raw.get("errors") or []),
        references=tuple(
            sorted(
                {r for rec in raw.get("files") or [] for r in references_of(rec)},
                key=lambda r: (r.collection, r.column, r.target),
            )
        ),
    )


# -- choosing the knowledge for an application version


def available() -> list[str]:
    """The minor versions there is knowledge for, oldest first."""
    folder = resources.files("migration_manager.data").joinpath("nocobase")
    found = [p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json")]
    return sorted(found, key=_minor_key)


@cache
def load(minor: str) -> Knowledge:
    text = (
        resources.files("migration_manager.data")
        .joinpath("nocobase")
        .joinpath(f"{minor}.json")
        .read_text("utf-8")
    )
    return Knowledge.from_dict(json.loads(text))


@dataclass(frozen=True)
class KnowledgeChoice:
    """Which knowledge a source gets, and why (recorded in the migration file)."""

    app_version: str | None
    knowledge: Knowledge | None
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        k = self.knowledge
        return {
            "app_version": self.app_version,
            "knowledge_version": k.version if k else None,
            "knowledge_minor": k.minor if k else None,
            "exact": bool(k and self.app_version and minor_of(self.app_version) == k.minor),
            "warning": self.warning,
        }


def choose(app_version: str | None) -> KnowledgeChoice:
    """The nearest knowledge at or below the app's minor version (a warning when not the same)."""
    minors = available()
    if not minors:
        return KnowledgeChoice(
            app_version, None, "no NocoBase code knowledge is installed; using the docs' table list"
        )
    if not app_version:
        k = load(minors[-1])
        return KnowledgeChoice(
            None,
            k,
            f"the source has no applicationVersion; using the NocoBase {k.version} table knowledge",
        )
    try:
        wanted = _minor_key(minor_of(app_version))
    except ConfigError:
        wanted = (10**6, 0)
    lower = [m for m in minors if _minor_key(m) <= wanted]
    if not lower:
        k = load(minors[0])
        return KnowledgeChoice(
            app_version,
            k,
            f"NocoBase {app_version} is older than every table knowledge ({', '.join(minors)}); "
            f"using {k.version}'s — regenerate with python -m migration_manager.nocobase_knowledge {app_version}",
        )
    k = load(lower[-1])
    if k.minor == minor_of(app_version):
        return KnowledgeChoice(app_version, k, None)
    return KnowledgeChoice(
        app_version,
        k,
        f"NocoBase {app_version} has no table knowledge of its own; using {k.version}'s (nearest lower "
        f"minor) — generate it with python -m migration_manager.nocobase_knowledge {app_version}",
    )
