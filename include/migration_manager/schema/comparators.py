"""What Alembic counts as a difference: the comparison callables and comparator plugin.

Types compared by their DDL text, defaults by their ``pg_get_expr()`` text, foreign keys by
what they mean (names aside); identity and generated columns have no default to compare.
:func:`setup_alembic` registers the plugin (and quiets Alembic's loggers) before first use.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from migration_manager.schema.sqltext import DIALECT, NEXTVAL, seq_name, type_text

# Alembic is imported where a structure is compared or changed: a unit whose structure the
# plan found equal never loads it (one import less at the start of every apply_table).
if TYPE_CHECKING:
    from alembic.operations import ops as alembic_ops
    from alembic.util import PriorityDispatchResult


def _comparable_type_text(type_: sa.types.TypeEngine[Any], default_schema: str | None) -> str:
    """The type's DDL text without a leading default schema.

    An enum or domain column travels as ``format_type()`` text (``mood``, or ``public.mood``
    where the source's search path lacks ``public``); the target reflects it as an ENUM or
    DOMAIN named with its schema only when that schema is not on the search path. Both
    spellings name the same type.
    """
    text = type_text(type_)
    if default_schema:
        prep = DIALECT.identifier_preparer
        for prefix in (f"{prep.quote_schema(default_schema)}.", f'"{default_schema}".'):
            if text.startswith(prefix):
                return text[len(prefix) :]
    return text


def compare_type(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool:
    default_schema = getattr(getattr(context, "dialect", None), "default_schema_name", None)
    return _comparable_type_text(inspected_type, default_schema) != _comparable_type_text(
        metadata_type, default_schema
    )


def _normalise_default(text: str | None, table: str, column: str) -> str | None:
    if text is None:
        return None
    text = text.strip()
    m = NEXTVAL.fullmatch(text)
    if m and seq_name(m.group(1))[1] == f"{table}_{column}_seq":
        # Alembic reports a serial column's own sequence default as None when reflecting the
        # target; treat the source's the same way.
        return None
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return text


def compare_default(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    # Alembic's own PostgreSQL comparison evaluates both defaults in a SELECT built as text,
    # which breaks on JSON defaults containing ":1" (a bind parameter to SQLAlchemy). The
    # defaults on both sides come from pg_get_expr(), so their texts are comparable as is.
    if metadata_column.identity is not None or metadata_column.computed is not None:
        return False
    table, column = metadata_column.table.name, metadata_column.name
    return _normalise_default(inspected_default, table, column) != _normalise_default(
        rendered_metadata_default, table, column
    )


def _skip_generated_defaults(
    autogen_context: Any,
    alter_column_op: alembic_ops.AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: sa.Column[Any],
    metadata_col: sa.Column[Any],
) -> PriorityDispatchResult:
    """Identity and generated columns have no server default to compare: stop there.

    Alembic (1.20) renders the target's default as ``.arg.text`` before calling a
    ``compare_server_default`` callable, which fails with AttributeError when the target's
    column is an identity or generated column (neither has ``.arg``). Registered for
    PostgreSQL at FIRST priority, this runs before that step and ends the server default
    comparison for such columns, as :func:`compare_default` would.
    """
    from alembic.util import PriorityDispatchResult

    generated = (sa.Identity, sa.Computed)
    if isinstance(conn_col.server_default, generated) or isinstance(
        metadata_col.server_default, generated
    ):
        alter_column_op.existing_server_default = conn_col.server_default
        return PriorityDispatchResult.STOP
    return PriorityDispatchResult.CONTINUE


@functools.cache
def _add_foreign_key_op_class() -> Callable[
    [sa.ForeignKeyConstraint], alembic_ops.CreateForeignKeyOp
]:
    """The op class below, made on first use (Alembic is imported only to compare or change)."""
    from alembic.operations import ops as alembic_ops

    class AddForeignKeyOp(alembic_ops.CreateForeignKeyOp):
        """Adds exactly the metadata's constraint (its referred columns are Column objects).

        Alembic's own op rebuilds the constraint from ``"table.column"`` strings, which SQLAlchemy
        splits on dots: ``"dot.a".id`` would become table ``a`` of a schema ``dot``.
        """

        def __init__(self, constraint: sa.ForeignKeyConstraint):
            base = alembic_ops.CreateForeignKeyOp.from_constraint(constraint)
            super().__init__(
                base.constraint_name,
                base.source_table,
                base.referent_table,
                base.local_cols,
                base.remote_cols,
                **base.kw,
            )
            self.constraint = constraint

        def to_constraint(self, migration_context: Any = None) -> sa.ForeignKeyConstraint:
            return self.constraint

    return AddForeignKeyOp


def add_foreign_key_op(constraint: sa.ForeignKeyConstraint) -> alembic_ops.CreateForeignKeyOp:
    """Alembic's op adding exactly ``constraint`` (names with dots stay names)."""
    return _add_foreign_key_op_class()(constraint)


def _fk_options(options: Any) -> tuple[Any, ...]:
    return tuple(
        (options.get(k) or None) for k in ("onupdate", "ondelete", "deferrable", "initially")
    )


def _compare_foreign_keys(
    autogen_context: Any,
    modify_table_ops: alembic_ops.ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> PriorityDispatchResult:
    """Foreign keys of a table both sides have, compared by what they mean (names aside).

    Replaces Alembic's comparison, which builds the target's constraints from ``"a.b.c"``
    strings: a table or column name holding a dot cannot be found that way.
    """
    from alembic.operations import ops as alembic_ops
    from alembic.util import PriorityDispatchResult

    if conn_table is None or metadata_table is None:
        return PriorityDispatchResult.CONTINUE  # CREATE TABLE carries its foreign keys

    def referred(schema_: str | None) -> str | None:
        return None if schema_ in (None, autogen_context.dialect.default_schema_name) else schema_

    target: dict[tuple[Any, ...], str | None] = {}
    for fk in autogen_context.inspector.get_foreign_keys(tname, schema=schema):
        sig = (
            tuple(fk["constrained_columns"]),
            referred(fk.get("referred_schema")),
            fk["referred_table"],
            tuple(fk["referred_columns"]),
            _fk_options(fk.get("options") or {}),
        )
        target[sig] = fk.get("name")
    wanted: dict[tuple[Any, ...], sa.ForeignKeyConstraint] = {}
    for c in metadata_table.constraints:
        if not isinstance(c, sa.ForeignKeyConstraint):
            continue
        sig = (
            tuple(c.column_keys),
            referred(c.referred_table.schema),
            c.referred_table.name,
            tuple(e.column.name for e in c.elements),
            _fk_options(
                {
                    "onupdate": c.onupdate,
                    "ondelete": c.ondelete,
                    "deferrable": c.deferrable,
                    "initially": c.initially,
                }
            ),
        )
        wanted[sig] = c
    for sig, name in target.items():
        if sig not in wanted and name:
            modify_table_ops.ops.append(
                alembic_ops.DropConstraintOp(name, tname, type_="foreignkey", schema=schema)
            )
    for sig, constraint in wanted.items():
        if sig not in target:
            modify_table_ops.ops.append(_add_foreign_key_op_class()(constraint))
    return PriorityDispatchResult.STOP


PLUGIN = "migration_manager.generated_defaults"
# Alembic's INFO lines ("Context impl PostgresqlImpl.", "Will assume transactional DDL.")
_NOISY = ("alembic.runtime.migration", "alembic.runtime.plugins", "alembic.ddl.postgresql")


@functools.cache
def setup_alembic() -> None:
    """Quiet Alembic's INFO loggers; register :func:`_skip_generated_defaults` and
    :func:`_compare_foreign_keys` as the plugin :data:`PLUGIN`.

    Called before Alembic compares or changes a structure; once per process (idempotent).
    """
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    from alembic.runtime.plugins import Plugin
    from alembic.util import DispatchPriority

    try:
        plugin = Plugin(PLUGIN)
    except ValueError:  # already registered
        return
    plugin.add_autogenerate_comparator(
        _skip_generated_defaults,
        "column",
        "server_default",
        qualifier="postgresql",
        priority=DispatchPriority.FIRST,
    )
    plugin.add_autogenerate_comparator(
        _compare_foreign_keys,
        "table",
        "foreignkeys",
        qualifier="postgresql",
        priority=DispatchPriority.FIRST,
    )
