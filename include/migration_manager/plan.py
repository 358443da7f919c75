"""Resolve rules to a per-table plan, refuse what cannot work, and group tables into units.

The plan is data (frozen dataclasses) that a test can assert on, a log can print and XCom can
carry as small dicts; nothing here writes anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

from migration_manager.config import (
    DATA_RULES,
    KEYED_RULES,
    OVERWRITE,
    PROFILE_DEFAULT,
    RULES,
    SCHEMA_ONLY,
    SKIP,
    SYSTEM,
    USER,
    MigrationRules,
)
from migration_manager.errors import PlanError
from migration_manager.manifest import Unit
from migration_manager.schema import TableStructure
from migration_manager.table_scope import TableClass, TableScope

# How much a rule writes; a companion table follows the weakest of the tables it links.
_STRENGTH = {OVERWRITE: 4, "upsert": 3, "insert-ignore": 2, SCHEMA_ONLY: 1, SKIP: 0}


class TablePlan(BaseModel):
    """One table of the plan: its group, its rule and why, its key."""

    model_config = ConfigDict(frozen=True)

    name: str
    schema_: str = Field(alias="schema")
    group: str
    rule: str
    rule_source: str  # "system default (profile)", "independent rule", "follows a, b", ...
    key_kind: str
    companion_of: tuple[str, ...] = ()

    @property
    def schema(self) -> str:  # type: ignore[override]  # BaseModel.schema is deprecated
        return self.schema_

    @property
    def moves_data(self) -> bool:
        return self.rule in DATA_RULES


# Why planning refuses a rule for a table (Refusal.code)
NO_PRIMARY_KEY = "no_primary_key"  # a keyed rule on a table without a primary key
AUTO_INCREMENT = "auto_increment"  # a keyed rule on a table with an auto-increment id
NOT_ALLOWED = "not_allowed"  # the application allows only other rules for this table
UNKNOWN_TABLE = "unknown_table"  # an independent rule names a table the source lacks
RULES_DISAGREE = "rules_disagree"  # two independent rules for one table


@dataclass(frozen=True)
class Refusal:
    """Why planning refuses ``rule`` for ``table``: a code and its facts (what a page groups and
    words), and the sentence planning gives (``message``, also its ``str``)."""

    table: str
    rule: str
    code: str
    message: str
    columns: tuple[str, ...] = ()  # AUTO_INCREMENT: the auto-increment columns
    kind: str = ""  # AUTO_INCREMENT: serial, identity or auto-increment
    allowed: tuple[str, ...] = ()  # NOT_ALLOWED: the rules the application allows

    def __str__(self) -> str:
        return self.message


def refuse(table: str, rule: str, structure: TableStructure, source: str) -> Refusal | None:
    """Why ``rule`` cannot be applied to ``table`` (None when it can)."""
    if rule not in KEYED_RULES:
        return None
    if not structure.primary_key:
        return Refusal(
            table,
            rule,
            NO_PRIMARY_KEY,
            f"{table}: {rule} ({source}) needs a primary key and {table} has none; use overwrite or schema-only",
        )
    auto = structure.auto_increment_columns
    if auto:
        kind = (
            structure.key_kind if structure.key_kind in ("serial", "identity") else "auto-increment"
        )
        return Refusal(
            table,
            rule,
            AUTO_INCREMENT,
            f"{table}: {rule} ({source}) is refused for tables with an auto-increment id "
            f"({', '.join(auto)} is {kind}); use overwrite or schema-only",
            columns=tuple(auto),
            kind=kind,
        )
    return None


def refusal(table: str, rule: str, structure: TableStructure, source: str) -> str | None:
    """Why ``rule`` cannot be applied to ``table``, as planning says it (None when it can)."""
    found = refuse(table, rule, structure, source)
    return found.message if found else None


def rule_choices(
    table: str, structure: TableStructure, cls: TableClass
) -> dict[str, Refusal | None]:
    """For each rule, why ``table`` cannot take it (None when it can): what planning would refuse."""
    out: dict[str, Refusal | None] = {}
    for rule in RULES:
        why = refuse(table, rule, structure, "chosen")
        if why is None and cls.allowed_rules and rule not in cls.allowed_rules and rule != SKIP:
            why = Refusal(
                table,
                rule,
                NOT_ALLOWED,
                f"{table}: the application allows only {', '.join(cls.allowed_rules)} for this table",
                allowed=tuple(cls.allowed_rules),
            )
        out[rule] = why
    return out


def _disallowed(cls: TableClass, rule: str) -> bool:
    return bool(cls.allowed_rules) and rule not in (cls.allowed_rules or ()) and rule != SKIP


def _not_allowed_note(table: str, why: str, rule: str, cls: TableClass) -> str:
    return (
        f"{table}: {rule} ({why}) is not allowed by the application for this table "
        f"(allowed: {', '.join(cls.allowed_rules or ())}); it takes its own default {cls.profile_rule}"
    )


def resolve(
    structures: Mapping[str, TableStructure],
    classes: Mapping[str, TableClass],
    rules: MigrationRules,
    scope: TableScope,
) -> tuple[list[TablePlan], list[str]]:
    """Each table's rule. Raises :class:`PlanError` listing every refused table."""
    plans, warnings, problems = evaluate(structures, classes, rules, scope)
    if problems:
        raise PlanError([p.message for p in problems])
    return plans, warnings


def evaluate(
    structures: Mapping[str, TableStructure],
    classes: Mapping[str, TableClass],
    rules: MigrationRules,
    scope: TableScope,
) -> tuple[list[TablePlan], list[str], list[Refusal]]:
    """Each table's rule, the plan's warnings, and every problem (refusals) without raising."""
    problems: list[Refusal] = []
    warnings: list[str] = [c.note for c in classes.values() if c.note]

    independent: dict[
        str, tuple[str, str]
    ] = {}  # physical table -> (rule, group it was listed under)
    rule: str
    for group in (SYSTEM, USER):
        for name, rule in rules.group(group).independent.items():
            table = name if name in structures else scope.physical(name)
            if table not in structures:
                problems.append(
                    Refusal(
                        name,
                        rule,
                        UNKNOWN_TABLE,
                        f"{name}: an independent rule ({group}: {rule}) names a table the source does not have "
                        f"(schema {scope.schema!r}); remove it or fix the name",
                    )
                )
                continue
            if table in independent and independent[table][0] != rule:
                problems.append(
                    Refusal(
                        name,
                        rule,
                        RULES_DISAGREE,
                        f"{name}: independent rules disagree ({independent[table][0]} and {rule}); keep one",
                    )
                )
                continue
            if classes[table].group != group:
                warnings.append(
                    f"{name}: listed under {group} independent rules but is a {classes[table].group} table; applied anyway"
                )
            independent[table] = (rule, group)

    resolved: dict[str, tuple[str, str]] = {}
    for table, cls in classes.items():
        if table in independent:
            resolved[table] = (independent[table][0], "independent rule")
        elif cls.companion_of:
            continue
        else:
            default = rules.group(cls.group).default
            if default == PROFILE_DEFAULT:
                resolved[table] = (cls.profile_rule, f"{cls.group} default: the profile's rule")
            elif _disallowed(cls, default):
                # a group default is not aimed at this table: it keeps its own default
                resolved[table] = (cls.profile_rule, f"{cls.group} default: the profile's rule")
                warnings.append(_not_allowed_note(table, f"the {cls.group} default", default, cls))
            else:
                resolved[table] = (default, f"{cls.group} default rule")
    for table, cls in classes.items():
        if table in resolved:
            continue
        sides = [resolved[s][0] for s in cls.companion_of if s in resolved]
        rule = min(sides, key=_STRENGTH.__getitem__) if sides else rules.group(cls.group).default
        if rule == PROFILE_DEFAULT:
            rule = cls.profile_rule
        if _disallowed(cls, rule):
            warnings.append(
                _not_allowed_note(table, f"following {', '.join(cls.companion_of)}", rule, cls)
            )
            rule = cls.profile_rule
        resolved[table] = (rule, f"follows {', '.join(cls.companion_of)}")

    plans = []
    for table in sorted(structures):
        cls = classes[table]
        rule, source = resolved[table]
        structure = structures[table]
        why = refuse(table, rule, structure, source)
        if why:
            if cls.companion_of and table not in independent:
                why = replace(why, message=f"{why.message}; or give {table} an independent rule")
            problems.append(why)
        elif cls.allowed_rules and rule not in cls.allowed_rules and rule != SKIP:
            problems.append(
                Refusal(
                    table,
                    rule,
                    NOT_ALLOWED,
                    f"{table}: {rule} ({source}) is not allowed by the application for this table; "
                    f"allowed: {', '.join(cls.allowed_rules)}",
                    allowed=tuple(cls.allowed_rules),
                )
            )
        plans.append(
            TablePlan(
                name=table,
                schema=structure.schema or scope.schema,
                group=cls.group,
                rule=rule,
                rule_source=source,
                key_kind=structure.key_kind,
                companion_of=cls.companion_of,
            )
        )
    return plans, warnings, problems


def units(plans: list[TablePlan], structures: Mapping[str, TableStructure]) -> list[Unit]:
    """Tables linked by foreign keys form one unit, ordered referenced-first; others stand alone.

    Skipped tables get no unit (they are reported by the plan). Within a unit, rows are deleted
    in reverse order and loaded in order, so no foreign key fails on load order.
    """
    active = {p.name for p in plans if p.rule != SKIP}
    parent: dict[str, str] = {t: t for t in active}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    deps: dict[str, set[str]] = {t: set() for t in active}
    for t in active:
        for fk in structures[t].foreign_keys:
            ref = fk.referred_table
            if ref in active and ref != t:
                deps[t].add(ref)
                parent[find(t)] = find(ref)
    groups: dict[str, list[str]] = {}
    for t in sorted(active):
        groups.setdefault(find(t), []).append(t)

    ordered_groups = []
    for members in groups.values():
        order: list[str] = []
        pending = sorted(members)
        while pending:
            ready = [t for t in pending if deps[t] <= set(order)] or pending[
                :1
            ]  # a cycle: break it
            order.append(ready[0])
            pending.remove(ready[0])
        ordered_groups.append(order)
    ordered_groups.sort(key=lambda g: g[0])
    rules = {p.name: p.rule for p in plans}
    return [
        Unit(
            id=f"{i:04d}",
            tables=tuple(g),
            label=", ".join(f"{t} ({rules[t]})" for t in g),
        )
        for i, g in enumerate(ordered_groups, start=1)
    ]


# --- packing units into apply tasks ------------------------------------------------------------

# What a table costs to apply besides its rows (a connection, a comparison, DDL, a commit),
# counted as this many bytes of rows: about what COPY moves in the time a table's fixed work takes.
TABLE_COST_BYTES = 1 << 20
# a packed task's label names this many characters of tables at most, then "+N more"
LABEL_CHARS = 60


def unit_weight(unit: Unit, sizes: Mapping[str, int]) -> int:
    """What applying ``unit`` costs, in bytes: its tables' rows (``sizes``) plus a fixed cost
    per table (:data:`TABLE_COST_BYTES`)."""
    return sum(max(0, int(sizes.get(t, 0))) + TABLE_COST_BYTES for t in unit.tables)


def pack_units(
    units: Sequence[Unit], sizes: Mapping[str, int], max_tasks: int
) -> list[tuple[Unit, ...]]:
    """The units grouped into at most about ``max_tasks`` tasks of similar cost; deterministic.

    With ``max_tasks`` units or fewer (or ``max_tasks`` < 1) each unit keeps a task of its own.
    Otherwise a unit that costs at least an even share of what is left (:func:`unit_weight`)
    keeps a task of its own (a unit is never split); the others share the remaining tasks, the
    costliest placed first on the least loaded task. Each task lists its units in the plan's order; tasks are ordered by their first unit.
    """
    if max_tasks < 1 or len(units) <= max_tasks:
        return [(u,) for u in units]
    position = {u.id: i for i, u in enumerate(units)}
    weight = {u.id: unit_weight(u, sizes) for u in units}
    rest = sorted(units, key=lambda u: (-weight[u.id], position[u.id]))
    alone: list[Unit] = []
    while rest and len(alone) < max_tasks - 1:
        share = sum(weight[u.id] for u in rest) / (max_tasks - len(alone))
        if weight[rest[0].id] < share:
            break
        alone.append(rest.pop(0))
    bins: list[list[Unit]] = [[] for _ in range(max(1, max_tasks - len(alone)))]
    loads = [0] * len(bins)
    for u in rest:  # costliest first, onto the least loaded task (the first of equals)
        i = loads.index(min(loads))
        bins[i].append(u)
        loads[i] += weight[u.id]
    tasks = [(u,) for u in alone] + [
        tuple(sorted(b, key=lambda u: position[u.id])) for b in bins if b
    ]
    return sorted(tasks, key=lambda t: position[t[0].id])


def task_label(units: Sequence[Unit]) -> str:
    """A task's name in the UI: its unit's label when it has one unit, else its tables
    (``users, roles, +38 more``)."""
    if len(units) == 1:
        return units[0].label
    tables = [t for u in units for t in u.tables]
    shown: list[str] = []
    for t in tables:
        if shown and len(", ".join([*shown, t])) > LABEL_CHARS:
            break
        shown.append(t)
    more = len(tables) - len(shown)
    return ", ".join(shown) + (f", +{more} more" if more else "")
