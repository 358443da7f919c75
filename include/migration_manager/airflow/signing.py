"""Where the signing keys live in Airflow.

- The **private key** that signs new migration files: the connection ``migration_signing``
  (``MM_SIGNING_CONN_ID``), any connection type; its *login* is the signer's name and its
  *password* the Ed25519 private key in PKCS#8 PEM. It may come from the secrets backend like
  any connection (``AIRFLOW_CONN_MIGRATION_SIGNING``, Vault, ...). No such connection: files
  are written unsigned (with a warning).
- The **trusted public keys** that executing sides accept: the Variable
  ``migration_trusted_keys`` (``MM_TRUSTED_KEYS_VARIABLE``), a JSON object
  ``{"signer name": "-----BEGIN PUBLIC KEY-----\\n..."}`` (or ``AIRFLOW_VAR_MIGRATION_TRUSTED_KEYS``).

``python -m migration_manager.airflow.signing ensure --signer NAME`` (docker-compose.yaml's
``airflow-init``) gives a fresh installation a key pair in its metadata database on first
start: :func:`ensure_key_pair`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from migration_manager.signing import (
    SigningKey,
    Trust,
    TrustedKey,
    generate,
    private_pem,
    trusted_keys,
)


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


def ensure_key_pair(signer: str) -> list[str]:
    """Give this Airflow a signing key pair unless it has one; returns what was done.

    - No connection ``migration_signing`` (in any secrets backend): a new Ed25519 key is stored
      as that connection in the metadata database (login ``signer``, the PEM as password).
    - The Variable ``migration_trusted_keys`` lacks the signing key's public key: it is added
      (under ``signer``, or ``signer-<key id>`` when that name trusts another key), keeping the
      keys already trusted.

    Idempotent: a second call changes nothing. Run where the metadata database is reachable
    (``airflow-init``), never inside a task. Nothing secret is printed.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    conn_id, variable = signing_conn_id(), trusted_keys_variable()
    done: list[str] = []
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        key = SigningKey.from_pem(
            conn.password or "", conn.login or "", where=f"connection {conn_id!r}"
        )
    else:
        key = SigningKey.from_pem(
            private_pem(generate().private_key), signer, where=f"connection {conn_id!r}"
        )
        with create_session() as session:
            session.add(
                Connection(
                    conn_id=conn_id,
                    conn_type="generic",
                    description="Signs the migration files this Airflow creates (Ed25519, PEM)",
                    login=key.signer,
                    password=private_pem(key.private_key),
                )
            )
        done.append(f"created connection {conn_id!r}: signer {key.signer}, key {key.key_id}")
    current = Variable.get(variable, default_var=None)
    if any(k.key_id == key.key_id for k in _keys(current)):
        return done
    doc = dict(json.loads(current)) if current else {}
    name = key.signer if key.signer not in doc else f"{key.signer}-{key.key_id}"
    doc[name] = key.public_pem()
    Variable.set(
        variable,
        json.dumps(doc, indent=1),
        description="Public keys whose migration files this Airflow runs (signer name -> PEM)",
    )
    done.append(f"Variable {variable!r} now trusts {name} (key {key.key_id})")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m migration_manager.airflow.signing",
        description="Give this Airflow a signing key pair for migration files (first start).",
    )
    parser.add_argument("command", choices=["ensure"])
    parser.add_argument("--signer", default="airflow", help="the signer's name (default airflow)")
    args = parser.parse_args(argv)
    done = ensure_key_pair(args.signer)
    for line in done or [
        f"connection {signing_conn_id()!r} and Variable {trusted_keys_variable()!r} already set up"
    ]:
        print(f"migration signing: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
