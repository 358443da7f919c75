"""Physical table and column names exactly as NocoBase (through Sequelize) makes them.

NocoBase's ``Collection.tableName()`` is ``snakeCase(tableName || name)`` when the app runs with
``DB_UNDERSCORED=true``, where ``snakeCase`` is Sequelize's ``Utils.underscore``, i.e. the
``inflection`` package's ``underscore``: an underscore before *every* capital letter, one leading
underscore dropped, lower case (``customerVIPs`` -> ``customer_v_i_ps``, not ``customer_vips``).
The database's ``beforeDefine`` hook then puts ``DB_TABLE_PREFIX`` in front unless the name
already starts with it. Field (column) names use the same ``snakeCase``.

``tests/fixtures/nocobase/table_names.json`` holds NocoBase 2.2.15's own output for the built-in
collections and a list of tricky names (``tests/fixtures/nocobase/table_names.js`` made it); the
unit test compares these functions with it.
"""

from __future__ import annotations

import re

_UPPER = re.compile(r"([A-Z])")


def underscore(name: str) -> str:
    """Sequelize's ``Utils.underscore`` (``inflection.underscore``) of an identifier."""
    parts = [_UPPER.sub(r"_\1", part).removeprefix("_") for part in name.split("::")]
    return "/".join(parts).lower()


def table_name(collection: str, prefix: str = "", underscored: bool = False) -> str:
    """The table NocoBase creates for a collection (or a ``tableName`` option)."""
    name = underscore(collection) if underscored else collection
    if prefix and not name.startswith(prefix):
        name = prefix + name
    return name


def column_name(field: str, underscored: bool = False) -> str:
    """The column NocoBase creates for a field."""
    return underscore(field) if underscored else field
