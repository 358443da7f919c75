"""Which database of which server a connection reached, as the server itself tells it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# a database name: PostgreSQL's identifier limit (63 bytes) in characters of up to 4 bytes
MAX_NAME_CHARS = 63 * 4


class DatabaseIdentity(BaseModel):
    """Which database of which server a connection reached, told by the server itself.

    ``system_identifier`` (``pg_control_system()``) is set once by ``initdb`` and differs
    between clusters; with the database's OID and name it names one database without comparing
    host names (a file's source may have been reached as ``staging-db``, its target as an IP).
    A role that may not call ``pg_control_system()`` records ``None`` there; the server's start
    time (``pg_postmaster_start_time()``, epoch seconds) then stands in. No credential is part
    of it. The migration file records its source's (``manifest.Source.identity``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    system_identifier: str | None = Field(pattern=r"^[0-9]{1,20}$")
    database_oid: int = Field(ge=0, strict=True)
    database: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    server_started_at: str | None = Field(default=None, pattern=r"^[0-9]{1,12}(\.[0-9]{1,9})?$")

    def same_as(self, other: DatabaseIdentity) -> bool | None:
        """True: the same database; False: another one; None: cannot tell (no server identity)."""
        if self.database_oid != other.database_oid or self.database != other.database:
            return False
        if self.system_identifier and other.system_identifier:
            return self.system_identifier == other.system_identifier
        if self.server_started_at and other.server_started_at:
            # one running server: the same start instant; a restart makes this miss, never match
            return self.server_started_at == other.server_started_at or None
        return None

    @property
    def shown(self) -> str:
        server = (
            f"server {self.system_identifier}"
            if self.system_identifier
            else "an unidentified server"
        )
        return f"database {self.database} (OID {self.database_oid}) of {server}"
