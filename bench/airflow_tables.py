"""Benchmark under the real scheduler: apps with hundreds of small tables (issue 20).

    make bench-airflow-tables     # BENCH_AIRFLOW_TABLES_ARGS="--tables 100,400,1000"
    python bench/airflow_tables.py [--tables 100,400] [--rows 25] [--pool-slots N] [--timeline]

Starts its own ``bin/airflow-local`` (its defaults: LocalExecutor, pool ``migration_units`` of
2 slots), and for each size N makes a source of N tables of ``--rows`` rows (no foreign keys)
and an empty target, then measures, from the trigger to the run's end through the REST API,
``migration_sync`` with the ``generic`` profile and every table ``overwrite``:

* ``first sync`` into the empty target;
* ``nothing changed``: the same sync again;
* ``one table changed``: after one row of one table changed in the source;

against ``pg_dump -Fc <source> | pg_restore -d <empty database>`` of the same source, measured
in the same run (the best of two before Airflow starts and one after the runs). Prints seconds, the ratio to that baseline, the apply_table tasks and units,
where the time went (create, plan, the apply tasks, the gaps) and the load average after each
run (the machine may be shared). PostgreSQL: ``MM_PG_URL`` (admin URL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "include")]

from tests.pgtools import create_database, drop_database, dsn_for, sql  # noqa: E402

from airflow_bigdata import bench_airflow  # noqa: E402  (bench/airflow.py, loaded by path)

DAG = bench_airflow.DAG
airflow_local, baseline, log = (
    bench_airflow.airflow_local,
    bench_airflow.baseline,
    bench_airflow.log,
)
print_results, settings_env = bench_airflow.print_results, bench_airflow.settings_env
timed_run = bench_airflow.timed_run

CHANGE = "UPDATE t0001 SET name = 'changed ' || clock_timestamp()::text WHERE id = 1"


def small_tables(dsn: str, count: int, rows: int) -> None:
    """``count`` tables t0001.. of ``rows`` rows each: a key, a text and an integer column."""
    sql(
        dsn,
        f"""DO $$ BEGIN FOR i IN 1..{count} LOOP
              EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, name text, n integer)',
                             't' || lpad(i::text, 4, '0'));
              EXECUTE format('INSERT INTO %I SELECT g, ''name '' || g, g * %s
                              FROM generate_series(1, {rows}) g', 't' || lpad(i::text, 4, '0'), i);
            END LOOP; END $$;""",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="100,400", help="sizes, comma-separated")
    parser.add_argument("--rows", type=int, default=25, help="rows per table")
    parser.add_argument("--pool-slots", type=int, default=None, help="slots of migration_units")
    parser.add_argument("--parallelism", type=int, default=None)
    parser.add_argument("--max-apply-tasks", type=int, default=None, help="the sync's param")
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / "airflow_tables.json"
    )
    parser.add_argument("--timeline", action="store_true", help="print every run's task timeline")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.tables.split(",") if n.strip()]
    env = settings_env(args.set, args.pool_slots)
    conf: dict[str, Any] = {
        "profile": "generic",
        "rules": {"user": {"default": "overwrite"}},
        "on_missing_plugins": "continue",
        "on_destructive": "continue",
    }
    if args.max_apply_tasks:
        conf["max_apply_tasks"] = args.max_apply_tasks
    report: list[dict[str, Any]] = []
    databases: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mm-bench-tables-") as tmp:
            pairs = {}
            for n in sizes:
                source, target = create_database("mmbench_src"), create_database("mmbench_dst")
                databases += [source, target]
                small_tables(dsn_for(source), n, args.rows)
                base = min(baseline(dsn_for(source)) for _ in range(2))
                log(f"{n} tables: baseline pg_dump -Fc | pg_restore {base:.2f} s")
                pairs[n] = (source, target, base)
            t0 = time.monotonic()
            with airflow_local(Path(tmp), args.parallelism, env) as airflow:
                log(f"Airflow up in {time.monotonic() - t0:.0f} s")
                airflow.unpause(DAG)
                for n, (source, target, base) in pairs.items():
                    airflow.set_connection(f"bench_src_{n}", dsn_for(source))
                    airflow.set_connection(f"bench_dst_{n}", dsn_for(target))
                    run_conf = {
                        **conf,
                        "source_conn_id": f"bench_src_{n}",
                        "target_conn_id": f"bench_dst_{n}",
                    }
                    results = []
                    for label in ("first sync", "nothing changed", "one table changed"):
                        if label == "one table changed":
                            sql(dsn_for(source), CHANGE)
                        log(f"{n} tables, {label} ...")
                        results.append(timed_run(airflow, run_conf, f"{n} tables {label}"))
                        r = results[-1]
                        log(
                            f"  {r['seconds']:.1f} s ({r['seconds'] / base:.1f}x), {r['tasks']} tasks"
                        )
                    report.append(
                        {"tables": n, "baseline_seconds": round(base, 2), "runs": results}
                    )
        # the machine may be busier before Airflow runs than after: the baseline is the best
        # of the measurements before and after the runs (the lower, the stricter the ratios)
        for entry in report:
            after = baseline(dsn_for(pairs[entry["tables"]][0]))
            log(f"{entry['tables']} tables: baseline again after the runs {after:.2f} s")
            entry["baseline_before_seconds"] = entry["baseline_seconds"]
            entry["baseline_seconds"] = round(min(entry["baseline_seconds"], after), 2)
    finally:
        for db in databases:
            drop_database(db)
    print(
        f"\nsettings: {env or 'bin/airflow-local defaults'}, conf max_apply_tasks "
        f"{args.max_apply_tasks or 'default'}, {os.cpu_count()} CPUs"
    )
    for entry in report:
        print(
            f"\n{entry['tables']} tables of {args.rows} rows: baseline pg_dump -Fc | pg_restore "
            f"{entry['baseline_seconds']:.2f} s (before the runs: "
            f"{entry['baseline_before_seconds']:.2f} s)"
        )
        print_results(entry["runs"], entry["baseline_seconds"])
        if args.timeline:
            for r in entry["runs"]:
                print(f"\n{r['run']} (start offset from the run's queueing, duration):")
                for t in r["timeline"]:
                    print(f"  {t['start']!s:>7} {t['seconds']!s:>6}  {t['state']:<9} {t['task']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"env": env, "rows": args.rows, "sizes": report}, indent=1))
    log(f"JSON in {args.json}")
    ok = all(r["state"] == "success" for e in report for r in e["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
