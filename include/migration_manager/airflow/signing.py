"""Where the signing keys live in Airflow.

- The **private key** that signs new migration files: the connection ``migration_signing``
  (``MM_SIGNING_CONN_ID``), any connection type; its *login* is the signer's name and its
  *password* the Ed25519 private key in PKCS#8 PEM. It may come from the secrets backend like
  any connection (``AIRFLOW_CONN_MIGRATION_SIGNING``, Vault, ...). No such connection: files
  are written unsigned (with a warning).
- The **trusted public keys** that executing sides accept: the Variable
  ``migration_trusted_keys`` (``MM_TRUSTED_KEYS_VARIABLE``), a JSON object
  ``{"signer name": "-----BEGIN PUBLIC KEY-----\\n..."}`` (or ``AIRFLOW_VAR_MIGRATION_TRUSTED_KEYS``).
"""

from __future__ import annotations

import os
from typing import Any

from migration_manager.signing import SigningKey, Trust, TrustedKey, trusted_keys


def signing_conn_id() -> str:
    return os.environ.get("MM_SIGNING_CONN_ID", "migration_signing")


def trusted_keys_variable() -> str:
    return os.environ.get("MM_TRUSTED_KEYS_VARIABLE", "migration_trusted_keys")


def signing_key() -> SigningKey | None:
    """The signing key of this side (a task's), or None when the connection does not exist."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = signing_conn_id()
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    return SigningKey.from_pem(
        conn.password or "", conn.login or "", where=f"connection {conn_id!r}"
    )


def _keys(value: Any) -> tuple[TrustedKey, ...]:
    return trusted_keys(value, where=f"Variable {trusted_keys_variable()!r}")


def task_trust(allow_unsigned: bool) -> Trust:
    """The trusted keys as a task sees them (Task SDK: secrets backends, then the API server)."""
    from airflow.sdk import Variable

    return Trust(_keys(Variable.get(trusted_keys_variable(), default=None)), allow_unsigned)


def server_trust(allow_unsigned: bool = False) -> Trust:
    """The trusted keys as the API server (the Migrations page) sees them."""
    from airflow.models.variable import Variable

    return Trust(_keys(Variable.get(trusted_keys_variable(), default_var=None)), allow_unsigned)
