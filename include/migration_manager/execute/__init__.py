"""Execute a migration file on a target: plan the units, then apply each in one transaction.

One module per concern:

- :mod:`.prepare`: plan the units (writes nothing); :mod:`.target`: what the plan reads of the target
- :mod:`.apply`: apply one unit; :mod:`.batch`: a task's units one after another; :mod:`.sequences`: sequences past the largest id
- :mod:`.results`: the run's outcome (plan, unit and table results)
- :mod:`.run`: a whole migration without Airflow

This package's public API is re-exported here.
"""

from migration_manager.execute.apply import apply_unit, unit_entries
from migration_manager.execute.batch import BatchOutcome, UnitFailure, apply_units, table_bytes
from migration_manager.execute.prepare import LOCKED, prepare
from migration_manager.execute.results import SAMPLE_KINDS, ExecutionPlan, TableResult, UnitResult
from migration_manager.execute.run import execute_migration

__all__ = [
    "LOCKED",
    "BatchOutcome",
    "UnitFailure",
    "apply_units",
    "SAMPLE_KINDS",
    "ExecutionPlan",
    "TableResult",
    "UnitResult",
    "apply_unit",
    "execute_migration",
    "prepare",
    "table_bytes",
    "unit_entries",
]
