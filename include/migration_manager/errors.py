"""One error hierarchy; every message says what is wrong and what to do.

``terminal`` tells the Airflow adapters whether a retry can help: a refused rule
or a corrupt file stays wrong however often it is retried, a dropped connection
may not.
"""

from __future__ import annotations


class MigrationError(Exception):
    """Root of every error this package raises on purpose."""

    terminal: bool = True


class ConfigError(MigrationError):
    """Bad input: a rules document, a profile name, an app setting, a param."""


class PlanError(MigrationError):
    """The plan cannot be made: refused rules, unknown tables. Lists every problem."""

    def __init__(self, problems: list[str], *, heading: str = "The migration plan was refused"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{heading} ({len(self.problems)} problem(s)); nothing was written:\n{lines}"
        )


class ArchiveError(MigrationError):
    """A migration file is unreadable, corrupt, truncated, tampered with or of another format."""


class ArchiveLimitError(ArchiveError):
    """A member of a migration file is (or inflates to) more than its limit: refused unread."""


class EnvironmentMismatchError(MigrationError):
    """The source and target applications are configured differently."""


class ApplyError(MigrationError):
    """Applying a unit to the target failed; the unit's transaction was rolled back."""

    def __init__(self, message: str, *, terminal: bool = False):
        super().__init__(message)
        self.terminal = terminal


class BackupError(MigrationError):
    """A backup cannot be taken or restored: missing or too old tools, a damaged file, a refusal."""


class StoreError(MigrationError):
    """The migration store did not take a write: full, read-only, unreachable or failing.

    Terminal when a person must act (no space, no permission), else retried.
    """

    def __init__(self, message: str, *, terminal: bool = False):
        super().__init__(message)
        self.terminal = terminal


class TransientError(MigrationError):
    """A connection dropped or a lock timed out: retrying may succeed."""

    terminal = False


class AppRestartError(MigrationError):
    """The running application could not be restarted (or did not come back) after a migration."""
