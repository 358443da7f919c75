"""The kinds of step a run records an outcome for, and the base of every outcome's model
(the models themselves: :mod:`check_outcomes`, :mod:`step_outcomes`)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class StepKind(StrEnum):
    """The kinds of step a run records an outcome for."""

    CREATE_FILE = "create_migration_file"
    ENV_CHECK = "env_check"
    PLAN = "plan"
    ENV_VALUES = "env_values"
    PLUGIN_CHECK = "plugin_check"
    DESTRUCTIVE_CHECK = "destructive_check"
    BACKUP = "backup"
    ENV_WRITE = "env_write"
    APPLY_UNIT = "apply_table"
    ROLLBACK = "rollback"
    RESTORE = "restore"
    APP_RESTART = "app_restart"

    @classmethod
    def of(cls, name: str | None) -> StepKind | None:
        """The kind a recorded step's name stands for; None for a step of no known kind."""
        if name is None:
            return None
        try:
            return cls(name)
        except ValueError:
            return None


# the checks' outcomes, as the record's ``checks`` holds them
CHECK_KINDS = (
    StepKind.ENV_CHECK,
    StepKind.ENV_VALUES,
    StepKind.PLUGIN_CHECK,
    StepKind.DESTRUCTIVE_CHECK,
    StepKind.ENV_WRITE,
    StepKind.APP_RESTART,
)


class Rollback(StrEnum):
    """Whether a failed run's target was put back to the run's backup (``rollback``'s outcome)."""

    ROLLED_BACK = "rolled back"
    NOT_ROLLED_BACK = "not rolled back"
    ROLLBACK_FAILED = "rollback failed"  # the restore failed: the target is as the run left it


class Part(BaseModel):
    """A part of an outcome: the keys it was given, nothing else."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class StepOutcome(Part):
    """What one step did, as the record keeps it."""

    kind: ClassVar[StepKind | None] = None

    def describe(self) -> str:
        """The outcome in a few words, for the Process view and the log."""
        return ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude_unset=True).items())


def items(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value or () if isinstance(v, Mapping)]
