"""The migration file's manifest as a typed model, validated whole before anything runs.

Every key is declared (``extra="forbid"``): an unknown key, a missing ``rule``, a rule name
this tool does not know (``truncate-everything``), a member the archive layout does not allow,
or a table whose data member the manifest does not list is refused with a message naming the
table and the key. Identifiers are PostgreSQL names (:data:`table_structure.Identifier`), and a
table's structure is :class:`table_structure.TableStructure`, the model the engine reflects,
compares and creates tables from.

``ArchiveReader.manifest`` is this model: the engine reads the manifest through it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import struct
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
)

from migration_manager.config import DATA_RULES, MigrationRules, ProfileName, Rule
from migration_manager.db_identity import DatabaseIdentity
from migration_manager.errors import ArchiveError
from migration_manager.table_structure import Identifier, TableStructure

MEMBER_PATTERN = re.compile(r"^data/[0-9]{4,6}\.copy\.zst$")


def _member(value: str) -> str:
    if not MEMBER_PATTERN.match(value):
        raise ValueError("a data member is named data/NNNN.copy.zst")
    return value


Member = Annotated[str, AfterValidator(_member)]
Count = Annotated[int, Field(ge=0, strict=True)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)


class Source(_Model):
    database: str | None
    server_version: str | None
    server_encoding: str | None = None  # files of versions before it have none
    app_version: str | None
    app_settings: dict[str, str]
    schema_: Identifier = Field(alias="schema")
    table_prefix: str
    identity: DatabaseIdentity | None = None  # files of versions before it have none


class Variable(_Model):
    """An environment variable or secret of the source app (never its value)."""

    name: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=64)  # "default" (plain) or "secret"
    referenced: bool = False  # the migrated data contains {{$env.NAME}}

    @property
    def secret(self) -> bool:
        return self.type == "secret"


class Environment(_Model):
    variables: list[Variable]
    referenced_unknown: list[str]


class Plugin(_Model):
    """A plugin enabled in the source app."""

    name: str
    package: str = ""
    version: str = ""


class Data(_Model):
    member: Member
    columns: list[Identifier]
    rows: Count
    raw_bytes: Count
    format: Literal["binary"]


METHOD = "hashtextextended-2x64-sum/1"

SUM = r"^-?[0-9]{1,40}$"  # an exact sum of 64-bit hashes, as text


class RowFingerprint(BaseModel):
    """Row count and two order-independent checksums of a table's rows (its data columns).

    ``listed``: for ``upsert``, the hash of every row; for ``insert-ignore``, of every key
    (None when the table has more than :data:`MAX_LISTED_ROWS` rows or another rule); written
    as base64 of big-endian int64s. The migration file records one per data table (``plan`` compares the target's, taken by
    :mod:`migration_manager.fingerprint`); XCom and the per-target record carry them as JSON
    (without the keys that are None).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(default=METHOD, min_length=1, max_length=64)
    rows: int = Field(ge=0, strict=True)
    sum0: str = Field(pattern=SUM)
    sum1: str = Field(pattern=SUM)
    listed: tuple[int, ...] | None = None
    # the server encoding its sums were taken in (they hash the row text's bytes): set on the
    # entries a unit gets (execute.unit_entries), from the file's source
    encoding: str | None = None

    @field_validator("listed", mode="before")
    @classmethod
    def _unpacked(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"listed is not base64 ({exc})") from None
            return struct.unpack(f">{len(raw) // 8}q", raw[: len(raw) // 8 * 8])
        return value

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Absent rather than null (``listed`` of a large table, ``encoding``), in every JSON
        form: the file, XCom, the per-target record."""
        return {k: v for k, v in handler(self).items() if v is not None}

    @field_serializer("listed")
    def _packed(self, listed: tuple[int, ...] | None) -> str | None:
        if listed is None:
            return None
        return base64.b64encode(struct.pack(f">{len(listed)}q", *listed)).decode("ascii")

    def same_rows(self, other: RowFingerprint) -> bool:
        return (self.method, self.rows, self.sum0, self.sum1) == (
            other.method,
            other.rows,
            other.sum0,
            other.sum1,
        )


class Table(_Model):
    name: Identifier
    schema_: Identifier = Field(alias="schema")
    group: Literal["system", "user"]
    rule: Rule
    rule_source: str
    key_kind: str
    companion_of: list[str] = []
    # rows matched to the target's by these columns, keeping the target's keys (storages.name)
    natural_key: list[Identifier] = []
    structure: TableStructure
    structure_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    fingerprint: RowFingerprint | None = None
    estimated_rows: int
    data: Data | None


class Reference(_Model):
    """``table.column`` holds values of ``target.target_column`` (a relation or foreign key)."""

    table: Identifier
    column: Identifier
    target: Identifier
    target_column: Identifier
    declared_by: str  # "foreign key <name>", or the NocoBase field that declares the relation

    def arrow(self) -> str:
        return f"{self.table}.{self.column} -> {self.target}.{self.target_column}"


class Unit(_Model):
    """Tables applied together in one transaction (one table, or tables linked by foreign keys),
    referenced tables first; the plan makes them (``plan.units``), XCom carries them."""

    id: str = Field(min_length=1, max_length=200)
    tables: tuple[Identifier, ...] = Field(min_length=1)
    label: str


class MemberInfo(_Model):
    sha256: Sha256
    bytes: Count


class ProfileKnowledge(_Model):
    """Which version of the profile's code-derived table knowledge classified the tables."""

    app_version: str | None
    knowledge_version: str | None
    knowledge_minor: str | None
    exact: bool
    warning: str | None


class Manifest(_Model):
    format: Literal["migration-manager"]
    format_version: Literal[1]
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,195}$")
    created_at: str
    tool_version: str
    profile: ProfileName
    profile_knowledge: ProfileKnowledge | None = None
    rules: MigrationRules
    source: Source
    environment: Environment
    plugins: list[Plugin]
    tables: list[Table]
    units: list[Unit]
    references: list[Reference] = []
    warnings: list[str]
    members: dict[Member, MemberInfo]

    @field_serializer("rules")
    def _every_rule(self, rules: MigrationRules) -> dict[str, Any]:
        """The rules whole, defaults included: what the source ran under, not what was typed."""
        return rules.model_dump(mode="json")

    def document(self) -> dict[str, Any]:
        """The manifest as ``manifest.json`` holds it: the keys it was given, none added."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _where(doc: Any, loc: tuple[int | str, ...]) -> str:
    """``table 'orders': key 'rule'`` for a location inside ``tables``; else the key path."""
    parts = [str(p) for p in loc]
    if len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int):
        name: Any = None
        with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
            name = doc["tables"][loc[1]].get("name")
        label = f"table {name!r}" if isinstance(name, str) and name else f"tables[{loc[1]}]"
        key = ".".join(parts[2:]) or "(the entry)"
        return f"{label}: key {key!r}"
    return f"key {'.'.join(parts) or '(the manifest)'!r}"


def _consistency(m: Manifest) -> list[str]:
    """What the types alone cannot say: rules against data, members against tables, units."""
    problems: list[str] = []
    names = [t.name for t in m.tables]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(f"table {name!r}: listed twice in 'tables'")
        seen.add(name)
    used: dict[str, str] = {}
    for t in m.tables:
        moves = t.rule in DATA_RULES
        if moves and t.data is None:
            problems.append(
                f"table {t.name!r}: key 'data': rule {t.rule!r} moves rows but the entry has no data"
            )
        if not moves and t.data is not None:
            problems.append(
                f"table {t.name!r}: key 'data': rule {t.rule!r} moves no rows but the entry has data"
            )
        if t.data is not None:
            member = t.data.member
            if member not in m.members:
                problems.append(
                    f"table {t.name!r}: key 'data.member': {member!r} is not listed in 'members'"
                )
            if member in used:
                problems.append(
                    f"table {t.name!r}: key 'data.member': {member!r} is also table {used[member]!r}'s"
                )
            used[member] = t.name
        if t.structure.name != t.name:
            problems.append(f"table {t.name!r}: key 'structure.name' is {t.structure.name!r}")
    for member in m.members:
        if member not in used:
            problems.append(f"key 'members': {member!r} belongs to no table")
    in_units: set[str] = set()
    for u in m.units:
        for name in u.tables:
            if name not in seen:
                problems.append(
                    f"unit {u.id!r}: key 'tables': {name!r} is not a table of the manifest"
                )
            in_units.add(name)
    return problems


def validate(doc: Any, *, name: str) -> Manifest:
    """The manifest as a model, or ArchiveError listing every problem (table and key named)."""
    if not isinstance(doc, dict):
        raise ArchiveError(
            f"{name}: the manifest is not a JSON object; create the migration file again"
        )
    try:
        model = Manifest.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:20]:
            lines.append(f"{_where(doc, tuple(err['loc']))}: {err['msg']}")
        more = exc.error_count() - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        raise ArchiveError(
            f"{name}: the manifest is not valid ({exc.error_count()} problem(s)); nothing was run. "
            "Create the migration file again with this tool:\n"
            + "\n".join(f"  - {line}" for line in lines)
        ) from None
    problems = _consistency(model)
    if problems:
        raise ArchiveError(
            f"{name}: the manifest is not consistent ({len(problems)} problem(s)); nothing was run. "
            "Create the migration file again with this tool:\n"
            + "\n".join(f"  - {p}" for p in problems[:20])
        )
    return model
