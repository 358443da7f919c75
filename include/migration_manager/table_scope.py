"""Where an application's tables live (schema, prefix, naming) and what a profile says of one.

The plan reads these two answers of a profile (:mod:`migration_manager.profiles`) without
depending on how the profile finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from migration_manager.nocobase_names import column_name, table_name


@dataclass(frozen=True)
class TableScope:
    """Where an application's tables live: PostgreSQL schema, name prefix, snake_case names."""

    schema: str = "public"
    prefix: str = ""
    underscored: bool = False

    def physical(self, logical: str) -> str:
        return table_name(logical, self.prefix, self.underscored)

    def column(self, logical: str) -> str:
        return column_name(logical, self.underscored)

    def contains(self, physical: str) -> bool:
        return physical.startswith(self.prefix)


@dataclass(frozen=True)
class TableClass:
    """What the profile says about one source table."""

    name: str
    group: str  # "system" or "user"
    profile_rule: str  # the rule when the group default is "profile"
    allowed_rules: tuple[str, ...] | None = None  # None: every rule the key allows
    companion_of: tuple[str, ...] = ()  # tables whose rules this one follows
    note: str | None = None  # a warning for the plan
