"""``make demo``: a real staging -> prod migration through the Airflow DAGs, on embedded demo data.

Creates two databases shaped like a NocoBase application (``mm_demo_staging``, ``mm_demo_prod``)
on the server at ``MM_PG_URL``, runs ``migration_sync`` with ``bin/airflow dags test`` (the real
Airflow CLI, tasks and XCom), prints the per-table summary, then runs it again to show that a
second identical run changes nothing. Safe to run repeatedly: the demo databases are recreated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from migration_manager.run_log_text import format_summary
from migration_manager.run_record import Outcome, RunSummary
from migration_manager.signing import SigningKey, generate, private_pem
from migration_manager.store_layout import LOGS

REPO = Path(__file__).resolve().parents[2]
DEMO_RULES = {
    "system": {"default": "profile", "independent": {}},
    "user": {"default": "schema-only", "independent": {"orders": "upsert"}},
}


def _dsn(base: str, database: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{database}"))


def _sql(name: str) -> str:
    return resources.files("migration_manager.data").joinpath(name).read_text("utf-8")


def make_databases(admin_url: str, staging: str, prod: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for db in (staging, prod):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    for db, extra in ((staging, "demo_staging.sql"), (prod, "demo_prod.sql")):
        with psycopg.connect(_dsn(admin_url, db), autocommit=True) as conn:
            conn.execute(_sql("demo_base.sql").encode())
            conn.execute(_sql(extra).encode())


def _connection(dsn: str) -> str:
    parts = urlsplit(dsn)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432,
            "login": parts.username,
            "password": parts.password,
            "schema": parts.path.lstrip("/"),
        }
    )


# The demo's prod lacks what staging has: an environment variable and an enabled plugin. A run
# started by a person would ask for them (Required actions); the demo answers up front the way a
# scheduled sync does: the value through ``env_values``, the plugin with a warning.
DEMO_ENV_VALUES = {"ORDERS_API_URL": "https://orders.prod.example.invalid/api"}
DEMO_CHECKS: dict[str, Any] = {
    "env_values": DEMO_ENV_VALUES,
    "on_missing_env": "fail",
    "on_missing_plugins": "continue",
    # overwriting the demo's system tables replaces their rows: reviewed, go on
    "on_destructive": "continue",
}


NEXT = """
Next: try it in the Airflow UI.
  make airflow       # Airflow on http://127.0.0.1:8080 (user admin, password admin); it resets
                     # the demo pair, so staging -> prod has a difference to migrate again
  Then: Migrations -> New migration -> Preview -> Sync now, answer Required actions
  (README.md: A tour of the UI). make airflow-stop stops it; make demo-reset resets the pair."""


def signing_env() -> dict[str, str]:
    """A fresh signing key pair for the demo: the connection that signs, the Variable that trusts."""
    key = SigningKey("demo", generate().private_key)
    return {
        "AIRFLOW_CONN_MIGRATION_SIGNING": json.dumps(
            {"conn_type": "generic", "login": key.signer, "password": private_pem(key.private_key)}
        ),
        "AIRFLOW_VAR_MIGRATION_TRUSTED_KEYS": json.dumps({key.signer: key.public_pem()}),
    }


def run_sync(staging_dsn: str, prod_dsn: str, home: Path, log_path: Path) -> RunSummary:
    env = {
        **os.environ,
        **signing_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONN_MIGRATION_SOURCE": _connection(staging_dsn),
        "AIRFLOW_CONN_MIGRATION_TARGET": _connection(prod_dsn),
        "MIGRATION_STORE": (home / "migrations").as_uri(),
    }
    conf = {"profile": "nocobase", "rules": DEMO_RULES, **DEMO_CHECKS}
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.run(
            [
                str(REPO / "bin" / "airflow"),
                "dags",
                "test",
                "migration_sync",
                "-c",
                json.dumps(conf),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    summaries = sorted(
        (
            p
            for p in (home / "migrations" / LOGS).glob("*/*/summary.json")
            if p.stat().st_mtime >= started - 1
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if proc.returncode != 0 or not summaries:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"The demo migration failed; the whole Airflow log is in {log_path}")
    return RunSummary.model_validate_json(summaries[-1].read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("MM_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument(
        "--home", type=Path, default=REPO / ".demo" / "airflow", help="AIRFLOW_HOME for the demo"
    )
    parser.add_argument("--staging-db", default="mm_demo_staging", help="demo source database")
    parser.add_argument("--prod-db", default="mm_demo_prod", help="demo target database")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="only recreate the demo databases (prod lacks what staging has), run nothing",
    )
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    staging, prod = args.staging_db, args.prod_db
    print(
        f"Creating demo databases {staging} and {prod} (NocoBase-shaped) on {urlsplit(args.pg_url).netloc}"
    )
    make_databases(args.pg_url, staging, prod)
    if args.reset:
        print(NEXT)
        return 0
    staging_dsn, prod_dsn = _dsn(args.pg_url, staging), _dsn(args.pg_url, prod)
    print(f"Rules: {json.dumps(DEMO_RULES)}")
    print(
        "Prod lacks staging's ORDERS_API_URL variable and graph-collection-manager plugin: "
        f"the run gets the value from env_values ({DEMO_ENV_VALUES['ORDERS_API_URL']}) "
        "and continues past the plugin with a warning (on_missing_plugins=continue)"
    )
    print("Running migration_sync (staging -> prod) with bin/airflow dags test ...")
    t0 = time.monotonic()
    first = run_sync(staging_dsn, prod_dsn, args.home, args.home.parent / "sync-1.log")
    print(
        f"\n{format_summary(first)}\n(finished in {time.monotonic() - t0:.0f} s; migration file {first.migration_file})\n"
    )
    print("Running the same sync again: nothing should change ...")
    second = run_sync(staging_dsn, prod_dsn, args.home, args.home.parent / "sync-2.log")
    changed = [t.table for t in second.tables if t.status not in ("unchanged", "skipped")]
    totals = second.totals
    print(
        f"second run: {second.status}, {len(changed)} table(s) changed, "
        f"+{totals.inserted} ~{totals.updated} -{totals.deleted} rows, {totals.ddl} DDL statements"
    )
    print(
        f"\nLogs: {args.home.parent}/sync-*.log; summaries under {args.home / 'migrations' / 'logs'}"
    )
    print(NEXT)
    return 0 if first.status == second.status == Outcome.SUCCESS and not changed else 1


if __name__ == "__main__":
    raise SystemExit(main())
