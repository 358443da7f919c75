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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

from migration_manager.config import RULES
from migration_manager.errors import ConfigError
from migration_manager.manifest import ProfileKnowledge

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).with_name("data") / "nocobase"
KNOWLEDGE_FORMAT = 1
GENERATOR = "python -m migration_manager.nocobase_packages"


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def _named(parts: Any) -> Any:
    """A ``{name: {...}}`` mapping of the file, each part given its key as its name."""
    if isinstance(parts, dict):
        return {k: {**v, "name": k} if isinstance(v, dict) else v for k, v in parts.items()}
    return parts


class CodeCollection(_Part):
    """One collection as NocoBase's code declares it (definition and extensions merged)."""

    name: str = Field(exclude=True)  # its key in the file
    table: str  # tableName, else name
    unique: tuple[str, ...] = ()  # fields besides the key that identify a row (storages.name)
    defined_by: str | None  # package whose defineCollection declares it (None: only extended)
    extended_by: tuple[str, ...] = ()
    migration_rules: tuple[str, ...] = Field(default=(), alias="migrationRules")  # first = default
    dump_rules: str | dict[str, JsonValue] | None = Field(default=None, alias="dumpRules")
    tree: str | None = None


class Reference(_Part):
    """A column whose values are another collection's keys (a belongsTo/hasOne/hasMany in code)."""

    collection: str  # holds the column
    column: str  # the foreign key, as a field name
    target: str  # the collection referred to
    target_key: str  # its field the values are ("": its primary key, Sequelize's default)
    declared_by: str  # "package: collection.field"


def references_of(rec: Mapping[str, Any]) -> list[Reference]:
    """The foreign keys one collection file's relations declare (those NocoBase names plainly)."""
    out = []
    for rel in rec.get("relations") or []:
        kind, name = rel.get("type"), rel.get("name") or ""
        target = rel.get("target") or name
        by = f"{rec['package']}: {rec['name']}.{name}"
        if kind == "belongsTo":
            fk = rel.get("foreignKey") or f"{name}Id"
            key = rel.get("targetKey") or ""
            out.append(
                Reference(
                    collection=rec["name"], column=fk, target=target, target_key=key, declared_by=by
                )
            )
        elif kind in ("hasMany", "hasOne") and rel.get("foreignKey"):
            key = rel.get("sourceKey") or ""
            out.append(
                Reference(
                    collection=target,
                    column=rel["foreignKey"],
                    target=rec["name"],
                    target_key=key,
                    declared_by=by,
                )
            )
    return out


class ThroughTable(_Part):
    """An m2m through table declared by a relation in code."""

    name: str = Field(exclude=True)  # its key in the file
    sides: tuple[str, ...]  # the collections it links (one when a collection links itself)
    declared_by: tuple[str, ...]  # "package: collection.field"
    keys: tuple[str, ...] = ()  # foreignKey, otherKey as declared


class Knowledge(_Part):
    """The table knowledge of one NocoBase version: ``data/nocobase/<minor>.json``."""

    format: int = KNOWLEDGE_FORMAT
    version: str = Field(alias="nocobase_version")  # the packages' NocoBase version, e.g. 2.2.15
    source: str = ""  # "npm registry" or "node_modules"
    generated_at: str = ""
    generator: str = GENERATOR
    packages: dict[str, str] = {}  # package -> version, those with collection files
    collections: Annotated[dict[str, CodeCollection], BeforeValidator(_named)] = {}
    through: Annotated[dict[str, ThroughTable], BeforeValidator(_named)] = Field(
        default={}, alias="through_tables"
    )
    references: tuple[Reference, ...] = ()
    skipped: tuple[str, ...] = Field(
        default=(), alias="skipped_files"
    )  # files that did not evaluate

    @property
    def minor(self) -> str:
        return minor_of(self.version)

    def file_text(self) -> str:
        """The JSON file: parts in name order, the minor version next to the version."""
        doc = self.model_dump(mode="json", by_alias=True)
        for key in ("packages", "collections", "through_tables"):
            doc[key] = dict(sorted(doc[key].items()))
        doc = {"nocobase_version": doc.pop("nocobase_version"), "minor": self.minor, **doc}
        return json.dumps({"format": doc.pop("format"), **doc}, indent=1) + "\n"


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
            migrationRules=rules,
            dumpRules=next((r["dumpRules"] for r in records if "dumpRules" in r), None),
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
        nocobase_version=version,
        source=source,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        packages={str(k): str(v) for k, v in (raw.get("packages") or {}).items()},
        collections=collections,
        through_tables={
            name: ThroughTable(
                name=name,
                sides=tuple(sorted(e["sides"])),
                declared_by=tuple(sorted(set(e["declared_by"]))),
                keys=tuple(e["keys"]),
            )
            for name, e in through.items()
        },
        skipped_files=tuple(
            f"{e['package']} {e['file']}: {e['error']}" for e in raw.get("errors") or []
        ),
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
    return Knowledge.model_validate_json(text)


@dataclass(frozen=True)
class KnowledgeChoice:
    """Which knowledge a source gets, and why (recorded in the migration file)."""

    app_version: str | None
    knowledge: Knowledge | None
    warning: str | None

    def recorded(self) -> ProfileKnowledge:
        """The choice as the migration file's manifest records it."""
        k = self.knowledge
        return ProfileKnowledge(
            app_version=self.app_version,
            knowledge_version=k.version if k else None,
            knowledge_minor=k.minor if k else None,
            exact=bool(k and self.app_version and minor_of(self.app_version) == k.minor),
            warning=self.warning,
        )


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
            f"using {k.version}'s — regenerate with python -m migration_manager.nocobase_packages {app_version}",
        )
    k = load(lower[-1])
    if k.minor == minor_of(app_version):
        return KnowledgeChoice(app_version, k, None)
    return KnowledgeChoice(
        app_version,
        k,
        f"NocoBase {app_version} has no table knowledge of its own; using {k.version}'s (nearest lower "
        f"minor) — generate it with python -m migration_manager.nocobase_packages {app_version}",
    )
