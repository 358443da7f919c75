"""Benchmark under the real scheduler: NocoBase staging -> prod syncs through the REST API.

    make bench-airflow     # BENCH_AIRFLOW_ARGS="--pool-slots 4 --parallelism 6 --set scheduler.x=y"
    python bench/airflow.py [--pool-slots N] [--parallelism N] [--set S.K=V] [--timeline] [--json PATH]

Starts its own ``bin/airflow-local`` (LocalExecutor, own home, fresh metadata database, free
port), loads the NocoBase fixture pair (``tests/fixtures/nocobase``) into two throwaway
databases and measures, in one run, each from the trigger (``POST /dagRuns``) to the run's
end as seen through the API (polled every 0.2 s):

* ``first sync``: ``migration_sync`` into the fixture's prod;
* ``nothing changed``: the same sync again;
* ``one table changed``: after one row of ``systemSettings`` changed in staging;

against the baseline ``pg_dump -Fc <staging> | pg_restore -d <empty database>`` measured in
the same run. Prints seconds, the ratio to the baseline, the number of mapped ``apply_table``
tasks and of units they applied, whether a backup was taken, where the time went (create,
plan, the apply tasks, the gaps), the load average, and each run's task timeline (start offset and duration of
every task, so the gaps between tasks show). PostgreSQL: ``MM_PG_URL`` (admin URL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include")]

from tests.e2e.airflowapi import LAUNCHER, Airflow, free_port  # noqa: E402
from tests.pgtools import (  # noqa: E402
    FIXTURES,
    create_database,
    drop_database,
    dsn_for,
    nocobase_databases,
    psql_bin,
    sql,
)

DAG = "migration_sync"
RUN_TIMEOUT = 900.0  # seconds one run may take before the benchmark gives up
CHANGE = "UPDATE \"systemSettings\" SET title = 'Bench ' || clock_timestamp()::text"


@contextmanager
def airflow_local(
    tmp: Path, parallelism: int | None, env: dict[str, str], keep_logs: Path | None = None
) -> Iterator[Airflow]:
    """bin/airflow-local with its own home, metadata database and port; stopped afterwards."""
    home, port = tmp / "airflow", free_port()
    db = create_database("mmbench_airflow")
    db_url = dsn_for(db).replace("postgresql://", "postgresql+psycopg://", 1)
    proc_env = {**os.environ, "MIGRATION_STORE": (tmp / "store").as_uri(), **env}
    common = ["--home", str(home), "--port", str(port)]
    started = subprocess.run(
        [sys.executable, str(LAUNCHER), "start", *common, "--db-url", db_url, "--no-demo"]
        + (["--parallelism", str(parallelism)] if parallelism else []),
        env=proc_env,
        capture_output=True,
        text=True,
    )
    try:
        if started.returncode != 0:
            raise SystemExit(f"bin/airflow-local start failed:\n{started.stderr[-3000:]}")
        yield Airflow(f"http://127.0.0.1:{port}", home)
    finally:
        subprocess.run(
            [sys.executable, str(LAUNCHER), "stop", *common, "--timeout", "5"],
            env=proc_env,
            capture_output=True,
        )
        drop_database(db)
        if keep_logs is not None and (home / "logs").is_dir():
            shutil.copytree(home / "logs", keep_logs, dirs_exist_ok=True)


def log(msg: str) -> None:
    print(f"bench-airflow: {msg}", file=sys.stderr, flush=True)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def baseline(source: str) -> float:
    """pg_dump -Fc of the source piped into pg_restore of a fresh database (seconds)."""
    bindir = Path(psql_bin()).parent
    db = create_database("mmbench_restore")
    try:
        started = time.monotonic()
        dump = subprocess.Popen(
            [str(bindir / "pg_dump"), "-Fc", "-d", source], stdout=subprocess.PIPE
        )
        restore = subprocess.run(
            [str(bindir / "pg_restore"), "--no-owner", "-d", dsn_for(db)],
            stdin=dump.stdout,
            capture_output=True,
        )
        assert dump.stdout is not None
        dump.stdout.close()
        if dump.wait() != 0 or restore.returncode != 0:
            raise SystemExit(f"baseline failed: {restore.stderr.decode(errors='replace')[-500:]}")
        return time.monotonic() - started
    finally:
        drop_database(db)


def timed_run(
    airflow: Airflow, conf: dict[str, Any], label: str, dag_id: str = DAG
) -> dict[str, Any]:
    run_id = f"bench__{label.replace(' ', '_')}__{int(time.time())}"
    started = time.monotonic()
    airflow.trigger(dag_id, conf, run_id=run_id)
    polled = 0.0
    while True:
        state = str(airflow.run(dag_id, run_id)["state"])
        if state in ("success", "failed"):
            break
        waited = time.monotonic() - started
        if waited > RUN_TIMEOUT:
            raise SystemExit(f"{label}: not finished after {RUN_TIMEOUT:.0f} s ({run_id})")
        if waited > polled + 5:  # a question nobody answers here: stop instead of waiting
            polled = waited
            asking = [
                ti["task_id"]
                for ti in airflow.task_instances(dag_id, run_id)
                if ti["state"] == "awaiting_input"
            ]
            if asking:
                raise SystemExit(f"{label}: {', '.join(asking)} waits for an answer ({run_id})")
        time.sleep(0.2)
    seconds = time.monotonic() - started
    run = airflow.run(dag_id, run_id)
    tis = airflow.task_instances(dag_id, run_id)
    origin = _ts(run.get("queued_at")) or _ts(run.get("start_date")) or 0.0
    timeline = []
    for ti in sorted(tis, key=lambda t: (_ts(t.get("start_date")) or 1e18, t["map_index"])):
        start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
        timeline.append(
            {
                "task": ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""),
                "state": ti["state"],
                "start": round(start - origin, 2) if start else None,
                "seconds": round(end - start, 2) if start and end else None,
            }
        )
    tasks = sum(1 for ti in tis if ti["task_id"] == "apply_table" and ti["map_index"] >= 0)
    units = 0
    # in-task overhead of each apply_table task: its duration minus its units' own work
    overheads = []
    for ti in tis:
        if ti["task_id"] != "apply_table" or ti["map_index"] < 0 or ti["state"] != "success":
            continue
        if dag_id != DAG:  # a unit of another DAG (the floor's) has no work to subtract
            continue
        start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
        entry = airflow.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/apply_table/xcomEntries/return_value",
            params={"map_index": ti["map_index"], "deserialize": True},
        )
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, str):
            value = json.loads(value)
        results = [value] if isinstance(value, dict) else value or []  # one result per unit
        units += len(results)
        if start and end and results:
            overheads.append(round(end - start - sum(float(r["seconds"]) for r in results), 2))
    backup = next((ti["state"] for ti in tis if ti["task_id"] == "backup"), None)
    if state != "success":
        log(airflow.explain(dag_id, run_id))
    return {
        "run": label,
        "state": state,
        "seconds": round(seconds, 2),
        "units": units,
        "tasks": tasks,
        "parts": parts(timeline, seconds),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "unit_overhead_seconds": sorted(overheads),
        "backup": backup,
        "run_id": run_id,
        "timeline": timeline,
    }


def parts(timeline: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Where a run's time went: create (the file), plan, tasks (first apply_table start to last
    end; 0 when none ran) and gaps (the rest: queueing, the other tasks, the API's polling)."""

    def span(prefix: str) -> float:
        found = [
            t for t in timeline if t["task"].split("[")[0] == prefix and t["start"] is not None
        ]
        if not found:
            return 0.0
        return max(t["start"] + (t["seconds"] or 0) for t in found) - min(t["start"] for t in found)

    out = {p: round(span(t), 2) for p, t in (("create", "create_migration_file"), ("plan", "plan"))}
    out["tasks"] = round(span("apply_table"), 2)
    out["gaps"] = round(seconds - sum(out.values()), 2)
    return out


def settings_env(settings: list[str], pool_slots: int | None) -> dict[str, str]:
    """``--set section.key=value`` and ``--pool-slots`` as the environment of bin/airflow-local."""
    env: dict[str, str] = {}
    for item in settings:
        key, _, value = item.partition("=")
        section, _, option = key.partition(".")
        env[f"AIRFLOW__{section.upper()}__{option.upper()}"] = value
    if pool_slots:
        env["MM_POOL_SLOTS"] = str(pool_slots)
    return env


def print_results(results: list[dict[str, Any]], base: float) -> None:
    print(
        f"{'run':<24} {'state':<8} {'seconds':>8} {'x baseline':>10} {'tasks':>5} {'units':>5}  "
        f"{'backup':<8} {'create':>6} {'plan':>6} {'tasks':>6} {'gaps':>6}  "
        "task overhead s (median, max)  load"
    )
    for r in results:
        o, p = r["unit_overhead_seconds"], r["parts"]
        spread = f"{o[len(o) // 2]:.2f}, {o[-1]:.2f}" if o else "-"
        print(
            f"{r['run']:<24} {r['state']:<8} {r['seconds']:>8.1f} {r['seconds'] / base:>10.1f} "
            f"{r['tasks']:>5} {r['units']:>5}  {r['backup'] or '-':<8} {p['create']:>6.1f} "
            f"{p['plan']:>6.1f} {p['tasks']:>6.1f} {p['gaps']:>6.1f}  {spread:<29} "
            f"{' '.join(f'{x:.1f}' for x in r['load_average'])}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-slots", type=int, default=None, help="slots of migration_units")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=None,
        help="task processes at once (airflow-local's default)",
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "airflow.json")
    parser.add_argument("--timeline", action="store_true", help="print every run's task timeline")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy Airflow's logs (tasks, scheduler) here"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="an Airflow setting for this run, e.g. scheduler.scheduler_idle_sleep_time=0.2",
    )
    args = parser.parse_args(argv)
    env = settings_env(args.set, args.pool_slots)
    prod_key = (FIXTURES / "dev_prod_aes_key.dat").read_bytes().hex()
    conf = {
        "source_conn_id": "bench_staging",
        "target_conn_id": "bench_prod",
        "env_values": {"HELPDESK_URL": "https://helpdesk.invalid", "HELPDESK_KEY": "bench-key"},
        "on_missing_plugins": "continue",
        # the first sync replaces most rows of some prod tables: a destructive plan, which by
        # default waits for Approve under Required actions (nobody answers a benchmark)
        "on_destructive": "continue",
    }
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="mm-bench-airflow-") as tmp,
        nocobase_databases() as dbs,
    ):
        log("baseline: pg_dump -Fc | pg_restore of staging")
        base = min(baseline(dbs["staging"]) for _ in range(2))
        log(f"baseline {base:.2f} s; starting bin/airflow-local")
        t0 = time.monotonic()
        with airflow_local(Path(tmp), args.parallelism, env, args.keep_logs) as airflow:
            log(f"Airflow up in {time.monotonic() - t0:.0f} s")
            airflow.set_connection("bench_staging", dbs["staging"])
            airflow.set_connection(
                "bench_prod", dbs["prod"], {"app_env": {"APP_AES_SECRET_KEY": prod_key}}
            )
            airflow.unpause(DAG)
            for label in ("first sync", "nothing changed", "one table changed"):
                if label == "one table changed":
                    sql(dbs["staging"], CHANGE)
                log(f"{label} ...")
                results.append(timed_run(airflow, conf, label))
                log(
                    f"{label}: {results[-1]['seconds']:.1f} s, {results[-1]['units']} units in "
                    f"{results[-1]['tasks']} tasks"
                )
    print(f"\nbaseline pg_dump -Fc | pg_restore: {base:.2f} s")
    print(
        f"settings: {env or 'bin/airflow-local defaults'}"
        + (f", parallelism {args.parallelism}" if args.parallelism else "")
    )
    print_results(results, base)
    if args.timeline:
        for r in results:
            print(f"\n{r['run']} (start offset from the run's queueing, duration):")
            for t in r["timeline"]:
                print(f"  {t['start']!s:>7} {t['seconds']!s:>6}  {t['state']:<9} {t['task']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "load_average": os.getloadavg(),
                "parallelism": args.parallelism,
                "baseline_seconds": round(base, 2),
                "runs": results,
                "env": env,
                "cpus": os.cpu_count(),
            },
            indent=1,
        )
    )
    log(f"JSON in {args.json}")
    return 0 if all(r["state"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
