"""Backups of a target database with PostgreSQL's own tools, and restores from them.

One module per concern:

- :mod:`~migration_manager.backup.tools`: finding ``pg_dump``/``pg_restore``/``psql`` (``MM_PG_BINDIR``
  or ``PATH``, at least the server's major version); connection details as ``PG*`` environment
  variables, never on the command line;
- :mod:`~migration_manager.backup.dump`: taking a backup (``pg_dump -Fc``, streamed through sha256,
  fingerprints from the dump's own snapshot);
- :mod:`~migration_manager.backup.record`: the typed backup record, its JSON (written and parsed
  only there), backup ids, which backups are beyond the number to keep;
- :mod:`~migration_manager.backup.restore`: verified restores, in place in one transaction or into
  a new database, and the refusals before one;
- :mod:`~migration_manager.backup.fingerprints`: each table's row count and content checksum.

Where backups live in the store: :mod:`migration_manager.store_layout`.
"""
