"""The run's outcome: what the plan found (:class:`ExecutionPlan`) and what each unit did.

:class:`TableResult` per table, :class:`UnitResult` per unit; both travel as JSON (XCom, the
run's log).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from migration_manager.db_identity import DatabaseIdentity
from migration_manager.fingerprint import RowFingerprint
from migration_manager.plan import Unit
from migration_manager.step_outcomes import Difference
from migration_manager.table_result import TableResult

SAMPLE_KINDS = ("inserted_keys", "updated_keys", "deleted_keys")


class UnitResult(BaseModel):
    """What one unit did: its tables' results, in one transaction."""

    model_config = ConfigDict(frozen=True)

    unit: str
    tables: tuple[TableResult, ...]
    seconds: float
    # each data table's fingerprint as the unit left it, taken just before its commit (not in a
    # dry run): recorded per target after the run (prod_edits.TargetRecord)
    fingerprints: dict[str, RowFingerprint | None] = {}


@dataclass(frozen=True)
class ExecutionPlan:
    migration_id: str
    units: tuple[Unit, ...]
    tables: tuple[TableResult, ...] = field(
        default=()
    )  # tables needing no unit (skipped / unchanged)
    pending: tuple[Difference, ...] = ()  # per table with work to do: rule, structure changes
    warnings: tuple[str, ...] = ()
    # tables whose structure (types, sequences, columns, indexes, ...) already equals the source's
    checked: frozenset[str] = frozenset()
    # each data table's fingerprint on the target as the plan saw it (None: the target lacks it);
    # tables too large for one, or locked, are absent (see prod_edits)
    target_fingerprints: Mapping[str, RowFingerprint | None] = field(default_factory=dict)
    target_identity: DatabaseIdentity | None = None

    def unit_fingerprints(self, unit: Unit) -> dict[str, RowFingerprint | None]:
        """What the unit's drift guard checks: its tables' fingerprints the plan saw (small)."""
        return {
            t: self.target_fingerprints[t] for t in unit.tables if t in self.target_fingerprints
        }
