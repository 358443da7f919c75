"""Table structure: reflect it from the source, carry it in the migration file, sync the target.

The structure travels in the manifest (:class:`TableStructure`): column types as PostgreSQL's
own ``format_type()`` text, defaults as ``pg_get_expr()`` text. On the target it becomes a
SQLAlchemy ``Table`` again, and Alembic's autogenerate comparison says what differs; Alembic's
operations then write the DDL. No hand-written differ.

One module per concern (as Alembic's ``autogenerate/compare`` package):

- :mod:`.sqltext`: ``format_type()`` texts to SQLAlchemy types and back, defaults, quoted names
- :mod:`.structure`: the structure (:mod:`migration_manager.table_structure`) as SQL: its
  SQLAlchemy ``Table``, its types' DDL
- :mod:`.catalog`: catalog queries (reflection of a schema's tables, types)
- :mod:`.comparators`: what Alembic counts as a difference; :func:`setup_alembic`
- :mod:`.compare`: Alembic's comparison of one table with the target's
- :mod:`.ddl`: the DDL that changes the target

This package's public API is re-exported here.
"""

from migration_manager.schema.catalog import (
    estimated_rows,
    find_type,
    list_tables,
    reflect_tables,
    row_counts,
)
from migration_manager.schema.comparators import setup_alembic
from migration_manager.schema.compare import SchemaChange, SchemaDiff, defer_keys, diff_table
from migration_manager.schema.ddl import (
    StatementRecorder,
    apply_diff,
    create_sequence_sql,
    ensure_sequences,
    ensure_types,
    own_sequences,
    run_ops,
)
from migration_manager.schema.sqltext import RawType, type_from_text, type_text
from migration_manager.schema.structure import (
    create_type_sql,
    domain_definition,
    to_table,
    type_name,
)
from migration_manager.table_structure import (
    ColumnStructure,
    SequenceStructure,
    TableStructure,
    TypeStructure,
)

__all__ = [
    "ColumnStructure",
    "RawType",
    "SchemaChange",
    "SchemaDiff",
    "SequenceStructure",
    "StatementRecorder",
    "TableStructure",
    "TypeStructure",
    "apply_diff",
    "create_sequence_sql",
    "create_type_sql",
    "domain_definition",
    "defer_keys",
    "diff_table",
    "ensure_sequences",
    "ensure_types",
    "estimated_rows",
    "row_counts",
    "find_type",
    "list_tables",
    "own_sequences",
    "reflect_tables",
    "run_ops",
    "setup_alembic",
    "to_table",
    "type_from_text",
    "type_name",
    "type_text",
]
