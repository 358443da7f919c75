"""What a run did to one table, or why it left the table alone.

One model for the unit's result (``execute.UnitResult.tables``), the run summary
(``summary.json``) and the run record (``migration.json``). A record written by an earlier
version reads with the keys it has (every field has a default, other keys are kept).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TableResult(BaseModel):
    """What a run did to one table (or why it left it alone); JSON as ``model_dump(mode="json")``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    table: str
    rule: str = "?"
    status: str = ""  # "applied", "unchanged", "skipped", "failed"
    ddl: tuple[str, ...] = ()
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    data_sql: tuple[str, ...] = ()
    # up to rules.SAMPLE_KEYS primary-key values (text) of the rows inserted / updated / deleted
    inserted_keys: tuple[str, ...] = ()
    updated_keys: tuple[str, ...] = ()
    deleted_keys: tuple[str, ...] = ()
    reason: str = ""  # why an unchanged table got no unit
    # the kinds of the structure changes made (schema.SchemaChange.kind: add_table, add_column, ...)
    structure_changes: tuple[str, ...] = ()
