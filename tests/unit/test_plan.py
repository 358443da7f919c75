"""plan.resolve and plan.units on hand-built structures: rule resolution, refusals, grouping."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest

from migration_manager.config import MigrationRules
from migration_manager.errors import PlanError
from migration_manager.plan import TablePlan, Unit, refusal, resolve, units
from migration_manager.schema import ColumnStructure, TableStructure
from migration_manager.table_scope import TableClass, TableScope

SCOPE = TableScope()


def table(
    name: str,
    key: str = "string",
    *,
    references: Iterable[str] = (),
    columns: Iterable[ColumnStructure] = (),
) -> TableStructure:
    """A table whose key is of ``key`` kind: string, bigint, serial, identity, composite, none."""
    cols: list[ColumnStructure] = []
    pk: tuple[str, ...] = ("id",)
    if key == "string":
        cols.append(ColumnStructure(name="id", type="character varying(255)", nullable=False))
    elif key == "bigint":
        cols.append(ColumnStructure(name="id", type="bigint", nullable=False))
    elif key == "serial":
        cols.append(
            ColumnStructure(
                name="id",
                type="integer",
                nullable=False,
                default=f"nextval('{name}_id_seq'::regclass)",
            )
        )
    elif key == "identity":
        cols.append(
            ColumnStructure(name="id", type="bigint", nullable=False, identity={"always": False})
        )
    elif key == "composite":
        cols += [
            ColumnStructure(name="roleName", type="character varying(255)", nullable=False),
            ColumnStructure(name="userId", type="bigint", nullable=False),
        ]
        pk = ("roleName", "userId")
    elif key == "composite-serial":
        cols += [
            ColumnStructure(
                name="id", type="integer", nullable=False, default="nextval('x_seq'::regclass)"
            ),
            ColumnStructure(name="tenant", type="text", nullable=False),
        ]
        pk = ("id", "tenant")
    elif key == "none":
        cols.append(ColumnStructure(name="path", type="text", nullable=True))
        pk = ()
    else:
        raise ValueError(key)
    fks = tuple(
        {
            "name": f"{name}_{ref}_fkey",
            "columns": [f"{ref}_id"],
            "referred_schema": "public",
            "referred_table": ref,
            "referred_columns": ["id"],
            "options": {},
        }
        for ref in references
    )
    cols += [ColumnStructure(name=f"{ref}_id", type="bigint", nullable=True) for ref in references]
    return TableStructure(
        name=name,
        schema="public",
        columns=(*cols, *columns),
        primary_key=pk,
        foreign_keys=fks,
    )


def user(name: str) -> TableClass:
    """The generic profile's class: every table is user-defined."""
    return TableClass(name, "user", "schema-only")


def plan(
    structures: dict[str, TableStructure],
    classes: dict[str, TableClass],
    doc: Any = None,
    scope: TableScope = SCOPE,
) -> tuple[dict[str, TablePlan], list[str]]:
    plans, warnings = resolve(structures, classes, MigrationRules.parse(doc), scope)
    assert [p.name for p in plans] == sorted(structures)
    return {p.name: p for p in plans}, warnings


def refused(
    structures: dict[str, TableStructure],
    classes: dict[str, TableClass],
    doc: Any = None,
    scope: TableScope = SCOPE,
) -> list[str]:
    with pytest.raises(PlanError) as info:
        resolve(structures, classes, MigrationRules.parse(doc), scope)
    assert str(len(info.value.problems)) + " problem(s)" in str(info.value)
    return info.value.problems


# --------------------------------------------------------------------------- defaults


def test_generic_user_tables_take_the_user_default() -> None:
    structures = {"a": table("a"), "b": table("b", "serial")}
    classes = {n: user(n) for n in structures}
    plans, warnings = plan(structures, classes)
    assert {n: (p.rule, p.rule_source) for n, p in plans.items()} == {
        "a": ("schema-only", "user default rule"),
        "b": ("schema-only", "user default rule"),
    }
    assert warnings == []
    plans, _ = plan(structures, classes, {"user": {"default": "overwrite"}})
    assert {p.rule for p in plans.values()} == {"overwrite"}


def test_system_tables_take_the_profile_rule_by_default() -> None:
    structures = {n: table(n) for n in ("uiSchemas", "users", "orders")}
    classes = {
        "uiSchemas": TableClass("uiSchemas", "system", "overwrite"),
        "users": TableClass("users", "system", "schema-only"),
        "orders": user("orders"),
    }
    plans, _ = plan(structures, classes)
    assert plans["uiSchemas"].rule == "overwrite"
    assert plans["uiSchemas"].rule_source == "system default: the profile's rule"
    assert plans["users"].rule == "schema-only"
    assert (plans["orders"].rule, plans["orders"].group) == ("schema-only", "user")


def test_explicit_system_default_replaces_the_profile_rule() -> None:
    structures = {"uiSchemas": table("uiSchemas")}
    classes = {"uiSchemas": TableClass("uiSchemas", "system", "overwrite")}
    plans, _ = plan(structures, classes, {"system": {"default": "skip"}})
    assert (plans["uiSchemas"].rule, plans["uiSchemas"].rule_source) == (
        "skip",
        "system default rule",
    )


def test_independent_rule_wins_over_defaults() -> None:
    structures = {"a": table("a"), "b": table("b")}
    classes = {n: user(n) for n in structures}
    plans, _ = plan(
        structures, classes, {"user": {"default": "skip", "independent": {"a": "upsert"}}}
    )
    assert (plans["a"].rule, plans["a"].rule_source) == ("upsert", "independent rule")
    assert plans["b"].rule == "skip"


def test_independent_rule_by_logical_name_in_a_prefixed_snake_case_app() -> None:
    scope = TableScope(schema="app", prefix="nb_", underscored=True)
    structures = {"nb_ui_schemas": table("nb_ui_schemas")}
    classes = {"nb_ui_schemas": TableClass("nb_ui_schemas", "system", "schema-only")}
    plans, _ = plan(
        structures, classes, {"system": {"independent": {"uiSchemas": "overwrite"}}}, scope
    )
    assert plans["nb_ui_schemas"].rule == "overwrite"
    # and by its physical name as well
    plans, _ = plan(
        structures, classes, {"system": {"independent": {"nb_ui_schemas": "upsert"}}}, scope
    )
    assert plans["nb_ui_schemas"].rule == "upsert"


def test_independent_rule_under_the_other_group_applies_with_a_warning() -> None:
    structures = {"orders": table("orders")}
    plans, warnings = plan(
        structures, {"orders": user("orders")}, {"system": {"independent": {"orders": "skip"}}}
    )
    assert plans["orders"].rule == "skip"
    assert warnings == [
        "orders: listed under system independent rules but is a user table; applied anyway"
    ]


def test_profile_notes_become_warnings() -> None:
    structures = {"mystery": table("mystery")}
    classes = {"mystery": TableClass("mystery", "system", "schema-only", note="mystery: unknown")}
    _, warnings = plan(structures, classes)
    assert warnings == ["mystery: unknown"]


# --------------------------------------------------------------------------- companions


def _through(
    sides: tuple[str, ...], key: str = "composite"
) -> tuple[dict[str, TableStructure], dict[str, TableClass]]:
    structures = {n: table(n) for n in sides}
    structures["link"] = table("link", key)
    classes: dict[str, TableClass] = {n: TableClass(n, "system", "schema-only") for n in sides}
    classes["link"] = TableClass("link", "system", "schema-only", companion_of=sides)
    return structures, classes


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("overwrite", "overwrite", "overwrite"),
        ("overwrite", "schema-only", "schema-only"),
        ("schema-only", "overwrite", "schema-only"),
        ("overwrite", "upsert", "upsert"),
        ("upsert", "insert-ignore", "insert-ignore"),
        ("insert-ignore", "schema-only", "schema-only"),
        ("overwrite", "skip", "skip"),
    ],
)
def test_companion_follows_the_weakest_side(left: str, right: str, expected: str) -> None:
    structures, classes = _through(("roles", "users"))
    doc = {"system": {"default": "profile", "independent": {"roles": left, "users": right}}}
    plans, _ = plan(structures, classes, doc)
    assert plans["link"].rule == expected
    assert plans["link"].rule_source == "follows roles, users"
    assert plans["link"].companion_of == ("roles", "users")


def test_companion_follows_profile_rules_of_its_sides() -> None:
    """rolesUsers: roles is overwritten, users is schema-only, so the through table is schema-only."""
    structures = {n: table(n) for n in ("roles", "users", "aiEmployees")}
    structures["rolesUsers"] = table("rolesUsers", "composite")
    structures["rolesAiEmployees"] = table("rolesAiEmployees", "composite")
    classes = {
        "roles": TableClass("roles", "system", "overwrite"),
        "users": TableClass("users", "system", "schema-only"),
        "aiEmployees": TableClass("aiEmployees", "system", "overwrite"),
        "rolesUsers": TableClass(
            "rolesUsers", "system", "schema-only", companion_of=("roles", "users")
        ),
        "rolesAiEmployees": TableClass(
            "rolesAiEmployees", "system", "schema-only", companion_of=("aiEmployees", "roles")
        ),
    }
    plans, _ = plan(structures, classes)
    assert plans["rolesUsers"].rule == "schema-only"
    assert plans["rolesAiEmployees"].rule == "overwrite"


def test_tree_path_table_follows_its_tree() -> None:
    structures = {"desktopRoutes": table("desktopRoutes", "bigint")}
    structures["main_desktopRoutes_path"] = table("main_desktopRoutes_path", "none")
    classes = {
        "desktopRoutes": TableClass("desktopRoutes", "system", "overwrite"),
        "main_desktopRoutes_path": TableClass(
            "main_desktopRoutes_path", "system", "schema-only", companion_of=("desktopRoutes",)
        ),
    }
    plans, _ = plan(structures, classes)
    assert plans["main_desktopRoutes_path"].rule == "overwrite"
    plans, _ = plan(structures, classes, {"system": {"default": "schema-only"}})
    assert plans["main_desktopRoutes_path"].rule == "schema-only"


def test_companion_with_its_own_independent_rule() -> None:
    structures, classes = _through(("roles", "users"))
    doc = {"system": {"default": "overwrite", "independent": {"link": "skip"}}}
    plans, _ = plan(structures, classes, doc)
    assert (plans["link"].rule, plans["link"].rule_source) == ("skip", "independent rule")


def test_companion_without_known_sides_takes_its_group_default() -> None:
    structures = {"link": table("link", "composite")}
    classes = {"link": TableClass("link", "user", "schema-only", companion_of=("gone",))}
    plans, _ = plan(structures, classes, {"user": {"default": "overwrite"}})
    assert plans["link"].rule == "overwrite"
    classes = {"link": TableClass("link", "system", "insert-ignore", companion_of=("gone",))}
    plans, _ = plan(structures, classes)  # system default "profile": the profile's rule
    assert plans["link"].rule == "insert-ignore"


def test_companion_refused_suggests_an_independent_rule() -> None:
    """Both sides upsert, so the key-less through table would be upserted: refused, with a way out."""
    structures, classes = _through(("roles", "users"), key="none")
    doc: dict[str, Any] = {"system": {"default": "upsert"}}
    assert refused(structures, classes, doc) == [
        "link: upsert (follows roles, users) needs a primary key and link has none; "
        "use overwrite or schema-only; or give link an independent rule"
    ]
    # the way out works
    doc = {"system": {"default": "upsert", "independent": {"link": "overwrite"}}}
    plans, _ = plan(structures, classes, doc)
    assert plans["link"].rule == "overwrite"


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("rule", ["upsert", "insert-ignore"])
@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("serial", "is refused for tables with an auto-increment id (id is serial)"),
        ("identity", "is refused for tables with an auto-increment id (id is identity)"),
        (
            "composite-serial",
            "is refused for tables with an auto-increment id (id is auto-increment)",
        ),
        ("none", "needs a primary key and t has none"),
    ],
)
@pytest.mark.parametrize("via", ["default", "independent"])
def test_keyed_rules_are_refused_without_a_usable_key(
    key: str, why: str, rule: str, via: str
) -> None:
    structures = {"t": table("t", key), "ok": table("ok")}
    classes = {n: user(n) for n in structures}
    if via == "default":
        doc: dict[str, Any] = {"user": {"default": rule}}
        source = "user default rule"
    else:
        doc = {"user": {"default": "overwrite", "independent": {"t": rule}}}
        source = "independent rule"
    assert refused(structures, classes, doc) == [
        f"t: {rule} ({source}) {why}; use overwrite or schema-only"
    ]


@pytest.mark.parametrize("key", ["string", "bigint", "composite"])
@pytest.mark.parametrize("rule", ["upsert", "insert-ignore"])
def test_keyed_rules_are_accepted_with_a_usable_key(key: str, rule: str) -> None:
    structures = {"t": table("t", key)}
    plans, _ = plan(structures, {"t": user("t")}, {"user": {"default": rule}})
    assert plans["t"].rule == rule


@pytest.mark.parametrize("rule", ["overwrite", "schema-only", "skip"])
@pytest.mark.parametrize("key", ["serial", "identity", "none"])
def test_other_rules_suit_every_key(key: str, rule: str) -> None:
    structures = {"t": table("t", key)}
    plans, _ = plan(structures, {"t": user("t")}, {"user": {"default": rule}})
    assert plans["t"].rule == rule


def test_refusal_helper() -> None:
    assert refusal("t", "overwrite", table("t", "none"), "x") is None
    assert refusal("t", "upsert", table("t", "bigint"), "x") is None
    why = refusal("t", "insert-ignore", table("t", "serial"), "independent rule")
    assert why is not None and why.startswith("t: insert-ignore (independent rule) is refused")


def test_all_problems_are_listed_at_once() -> None:
    structures = {
        "a": table("a", "serial"),
        "b": table("b", "none"),
        "c": table("c", "identity"),
        "fine": table("fine"),
    }
    classes = {n: user(n) for n in structures}
    doc = {"user": {"default": "upsert", "independent": {"nope": "skip"}}}
    problems = refused(structures, classes, doc)
    assert [p.split(":")[0] for p in problems] == ["nope", "a", "b", "c"]


def test_unknown_independent_table_is_refused() -> None:
    structures = {"orders": table("orders")}
    assert refused(
        structures, {"orders": user("orders")}, {"user": {"independent": {"order": "skip"}}}
    ) == [
        "order: an independent rule (user: skip) names a table the source does not have "
        "(schema 'public'); remove it or fix the name"
    ]


def test_disagreeing_independent_rules_are_refused() -> None:
    structures = {"orders": table("orders")}
    doc = {
        "system": {"independent": {"orders": "overwrite"}},
        "user": {"independent": {"orders": "skip"}},
    }
    problems = refused(structures, {"orders": user("orders")}, doc)
    assert problems == ["orders: independent rules disagree (overwrite and skip); keep one"]


def test_agreeing_independent_rules_in_both_groups_are_fine() -> None:
    structures = {"orders": table("orders")}
    doc = {
        "system": {"independent": {"orders": "skip"}},
        "user": {"independent": {"orders": "skip"}},
    }
    plans, _ = plan(structures, {"orders": user("orders")}, doc)
    assert plans["orders"].rule == "skip"


def test_rule_the_application_does_not_allow_is_refused_but_skip_always_is() -> None:
    structures = {"users": table("users", "bigint")}
    classes = {"users": TableClass("users", "system", "schema-only", ("schema-only", "upsert"))}
    problems = refused(structures, classes, {"system": {"independent": {"users": "overwrite"}}})
    assert problems == [
        "users: overwrite (independent rule) is not allowed by the application for this table; "
        "allowed: schema-only, upsert"
    ]
    plans, _ = plan(structures, classes, {"system": {"independent": {"users": "upsert"}}})
    assert plans["users"].rule == "upsert"
    plans, _ = plan(structures, classes, {"system": {"default": "skip"}})
    assert plans["users"].rule == "skip"


def test_a_group_default_the_application_does_not_allow_leaves_the_table_its_own_default() -> None:
    # NocoBase 2.2's verificators allow only skip, verifiers overwrite or skip: a global
    # "schema-only" for system tables is not aimed at them, so they keep their own default
    structures = {
        "verificators": table("verificators", "string"),
        "users": table("users", "bigint"),
        "usersVerificators": table("usersVerificators", "composite"),
    }
    classes = {
        "verificators": TableClass("verificators", "system", "skip", ("skip",)),
        "users": TableClass("users", "system", "schema-only", ("schema-only", "overwrite")),
        "usersVerificators": TableClass(
            "usersVerificators",
            "system",
            "skip",
            ("skip",),
            companion_of=("users", "verificators"),
        ),
    }
    plans, warnings = plan(structures, classes, {"system": {"default": "overwrite"}})
    assert plans["users"].rule == "overwrite"
    assert plans["verificators"].rule == "skip"
    # follows the weaker side (skip): allowed
    assert plans["usersVerificators"].rule == "skip"
    assert warnings == [
        "verificators: overwrite (the system default) is not allowed by the application for "
        "this table (allowed: skip); it takes its own default skip"
    ]
    # a companion whose sides resolve to a rule it does not allow takes its own default too
    classes["verificators"] = TableClass("verificators", "system", "overwrite")
    plans, warnings = plan(structures, classes, {"system": {"default": "overwrite"}})
    assert plans["usersVerificators"].rule == "skip"
    assert warnings == [
        "usersVerificators: overwrite (following users, verificators) is not allowed by the "
        "application for this table (allowed: skip); it takes its own default skip"
    ]


def test_plan_error_message() -> None:
    structures = {"t": table("t", "none")}
    with pytest.raises(
        PlanError,
        match=re.escape(
            "The migration plan was refused (1 problem(s)); nothing was written:\n  - t: "
        ),
    ):
        resolve(
            structures,
            {"t": user("t")},
            MigrationRules.parse({"user": {"default": "upsert"}}),
            SCOPE,
        )


# --------------------------------------------------------------------------- the plan as data


def test_table_plan_round_trips_and_knows_whether_it_moves_data() -> None:
    p = _plan("link", "overwrite", group="system", key_kind="composite", companion_of=("a", "b"))
    assert TablePlan.model_validate(p.model_dump(mode="json", by_alias=True)) == p
    assert p.model_dump(mode="json", by_alias=True)["companion_of"] == ["a", "b"]
    assert p.schema == "public"
    assert p.moves_data
    for rule in ("upsert", "insert-ignore"):
        assert _plan("t", rule).moves_data
    for rule in ("schema-only", "skip"):
        assert not _plan("t", rule).moves_data


def test_key_kinds_in_the_plan() -> None:
    kinds = {
        k: table("t", k).key_kind
        for k in ("string", "bigint", "serial", "identity", "composite", "none")
    }
    assert kinds == {
        "string": "string",
        "bigint": "integer",
        "serial": "serial",
        "identity": "identity",
        "composite": "composite",
        "none": "none",
    }


# --------------------------------------------------------------------------- units


def _plans(structures: dict[str, TableStructure], doc: Any) -> list[TablePlan]:
    plans, _ = resolve(
        structures, {n: user(n) for n in structures}, MigrationRules.parse(doc), SCOPE
    )
    return plans


def test_tables_linked_by_foreign_keys_form_one_unit_referenced_first() -> None:
    structures = {
        "a_child": table("a_child", "bigint", references=["m_parent"]),
        "m_parent": table("m_parent", "bigint", references=["z_root"]),
        "z_root": table("z_root", "bigint"),
        "alone": table("alone"),
    }
    result = units(_plans(structures, {"user": {"default": "overwrite"}}), structures)
    assert [u.tables for u in result] == [("alone",), ("z_root", "m_parent", "a_child")]
    assert [u.id for u in result] == ["0001", "0002"]
    assert result[1].label == "z_root (overwrite), m_parent (overwrite), a_child (overwrite)"
    assert Unit.model_validate(result[1].model_dump(mode="json")) == result[1]


def test_skipped_tables_get_no_unit_and_do_not_link() -> None:
    structures = {
        "child": table("child", "bigint", references=["parent"]),
        "parent": table("parent", "bigint"),
        "other": table("other"),
    }
    doc = {"user": {"default": "overwrite", "independent": {"parent": "skip", "other": "skip"}}}
    result = units(_plans(structures, doc), structures)
    assert [u.tables for u in result] == [("child",)]


def test_schema_only_tables_still_get_units() -> None:
    structures = {"a": table("a"), "b": table("b")}
    result = units(_plans(structures, {"user": {"default": "schema-only"}}), structures)
    assert [u.tables for u in result] == [("a",), ("b",)]


def test_a_foreign_key_cycle_still_gives_one_unit_with_every_table() -> None:
    structures = {
        "a": table("a", "bigint", references=["b"]),
        "b": table("b", "bigint", references=["a"]),
        "self": table("self", "bigint", references=["self"]),
    }
    result = units(_plans(structures, {"user": {"default": "overwrite"}}), structures)
    assert sorted(sorted(u.tables) for u in result) == [["a", "b"], ["self"]]


def test_units_of_no_plans() -> None:
    assert units([], {}) == []


def _plan(
    name: str,
    rule: str,
    *,
    group: str = "user",
    key_kind: str = "string",
    companion_of: tuple[str, ...] = (),
) -> TablePlan:
    return TablePlan(
        name=name,
        schema="public",
        group=group,
        rule=rule,
        rule_source="x",
        key_kind=key_kind,
        companion_of=companion_of,
    )
