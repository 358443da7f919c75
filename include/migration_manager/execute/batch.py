"""Apply a packed task's units one after another, each in its own transaction.

A task that applies several units (see :func:`migration_manager.plan.pack_units`) must not let
one unit's failure stop the others, and a retry must not apply again what an earlier try
committed: :func:`apply_units` runs every unit not done yet, keeps going after a failure, and
says which units failed and whether a retry could help.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from migration_manager import manifest
from migration_manager.errors import MigrationError
from migration_manager.execute.results import UnitResult
from migration_manager.plan import Unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitFailure:
    """A unit whose transaction was rolled back, and why."""

    unit: Unit
    error: str
    terminal: bool  # a retry cannot fix it (refused rule, data the target cannot take)


@dataclass(frozen=True)
class BatchOutcome:
    """What a task's units came to: one result per unit that is applied, in the plan's order."""

    results: tuple[UnitResult, ...]
    failures: tuple[UnitFailure, ...] = ()
    reused: tuple[str, ...] = ()  # units applied by an earlier try, not applied again

    @property
    def terminal(self) -> bool:
        """Whether no failure could be fixed by a retry (every one is terminal)."""
        return all(f.terminal for f in self.failures)

    def error_text(self) -> str:
        """The failures as a message that names each unit's tables and says what to do."""
        failed = "; ".join(f"{f.unit.label}: {f.error}" for f in self.failures)
        return (
            f"{len(self.failures)} of {len(self.results) + len(self.failures)} unit(s) of this "
            f"task failed, each rolled back: {failed}. The task's other units are applied. Fix "
            "the cause and clear this task: it applies again only the units that failed."
        )


def apply_units(
    units: Sequence[Unit],
    apply: Callable[[Unit], UnitResult],
    *,
    done: Mapping[str, UnitResult] | None = None,
) -> BatchOutcome:
    """Apply ``units`` in order with ``apply`` (one transaction each), going on after a failure.

    ``done``: results of units an earlier try of the task applied (by unit id): reported again,
    not applied again. Errors other than :class:`MigrationError` (a bug, a kill) propagate.
    """
    done = done or {}
    results: list[UnitResult] = []
    failures: list[UnitFailure] = []
    reused: list[str] = []
    for unit in units:
        if unit.id in done:
            log.info("%s: applied by an earlier try of this task; not applied again", unit.label)
            results.append(done[unit.id])
            reused.append(unit.id)
            continue
        try:
            results.append(apply(unit))
        except MigrationError as exc:
            log.error("%s failed (rolled back): %s", unit.label, exc)
            failures.append(UnitFailure(unit=unit, error=str(exc), terminal=exc.terminal))
    return BatchOutcome(results=tuple(results), failures=tuple(failures), reused=tuple(reused))


def table_bytes(table: manifest.Table) -> int:
    """How many bytes of rows a manifest table moves (0 for a rule that moves none)."""
    return table.data.raw_bytes if table.data is not None else 0
