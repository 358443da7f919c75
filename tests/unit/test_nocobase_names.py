"""Physical names as NocoBase 2.2.15 makes them, compared with NocoBase's own output.

``tests/fixtures/nocobase/table_names.json`` was made by running NocoBase's ``@nocobase/database``
(a never-connected ``Database`` per DB_UNDERSCORED x DB_TABLE_PREFIX combination, each name a
collection, its Sequelize model's ``tableName``) through node once: regenerate it with
the commands in ``table_names.js``.
"""

from __future__ import annotations

import json

import pytest

from migration_manager.nocobase_knowledge import load
from migration_manager.nocobase_names import column_name, table_name, underscore
from migration_manager.profiles import nocobase_builtin_rules
from migration_manager.table_scope import TableScope
from tests.pgtools import FIXTURES

TRICKY = (
    "customerVIPs",
    "customerVIP",
    "VIPCustomers",
    "ABC",
    "A",
    "a",
    "userID",
    "HTMLParser",
    "XMLHttpRequest",
    "IPAddress",
    "orders2024",
    "v2Items",
    "item2Name",
    "x1Y2z3",
    "Orders",
    "OrderItems",
    "already_snake",
    "snake_Case",
    "mixed_CamelCase",
    "t_abc123",
    "t_ABC",
    "_leading",
    "__double",
    "trailingX",
    "roles_users",
    "nb_orders",
    "nb_Orders",
    "nbOrders",
    "main_desktopRoutes_path",
    "main_customerVIPs_path",
    "ns::Name",
)


def checked_names() -> list[str]:
    """Every built-in name (code knowledge, through tables, the docs' list) and the tricky ones."""
    knowledge = load("2.2")
    names = set(knowledge.collections) | {c.table for c in knowledge.collections.values()}
    names |= set(knowledge.through) | set(nocobase_builtin_rules())
    return sorted(names) + [n for n in TRICKY if n not in names]


NOCOBASE = json.loads((FIXTURES / "table_names.json").read_text())


def test_the_table_of_names_covers_every_checked_name() -> None:
    assert NOCOBASE["nocobase"] == "2.2.15"
    assert sorted(NOCOBASE["names"]) == sorted(checked_names())


@pytest.mark.parametrize("name", checked_names())
def test_names_match_nocobase(name: str) -> None:
    theirs = NOCOBASE["names"][name]
    assert underscore(name) == theirs["underscore"]
    for i, combo in enumerate(NOCOBASE["combinations"]):
        underscored, prefix = combo["underscored"], combo["prefix"]
        assert table_name(name, prefix, underscored) == theirs["tables"][i], combo
        assert TableScope("public", prefix, underscored).physical(name) == theirs["tables"][i]
        assert column_name(name, underscored) == theirs["columns"][i], combo


def test_consecutive_capitals_are_split_one_by_one() -> None:
    assert TableScope("app", "nb_", True).physical("customerVIPs") == "nb_customer_v_i_ps"
    assert TableScope("app", "nb_", False).physical("nb_orders") == "nb_orders"


if __name__ == "__main__":
    print("\n".join(checked_names()))
