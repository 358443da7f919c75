"""Large data under the real scheduler: a full sync of the ``make bench`` data vs the psql pipe.

    make bench-airflow-bigdata   # BENCH_AIRFLOW_BIGDATA_ARGS="--scale 0.05" for a quick run
    python bench/airflow_bigdata.py [--scale 1.0] [--runs no-backup,backup,floor] [--baseline-repeat 2]
        [--pool-slots N] [--parallelism N] [--set S.K=V] [--timeline] [--json PATH]

Generates the data of ``make bench`` (``bench/datagen.py``: 2.2 M rows in 5 tables, 540 MB at
``--scale 1.0``; the reported figure is at 1.0) into a source database, starts its own
``bin/airflow-local`` (own home, metadata database and free port, as ``bench/airflow.py``) and
measures, in one run:

* baseline (``bench/run.py``'s): per table ``psql \\copy ... to stdout (format binary)`` piped
  into ``psql \\copy ... from stdin (format binary)`` into empty tables of the same DDL, tables
  one after another; ``--baseline-repeat`` times, before and after the syncs, the best counts;
* an untimed warm-up sync of a one-table source first (``--no-warmup``: none): the first
  task processes of a new home compile every module they import, once per deployment;
* each of ``--runs``: ``migration_sync`` of the source into a new empty database (profile
  ``generic``, every table ``overwrite``), triggered through the REST API (``POST /dagRuns``)
  and timed to the run's end as the API reports it (polled every 0.2 s). ``no-backup`` sets
  ``skip_backup`` (the pipe takes none either: the fair comparison); ``backup`` takes the
  backup as a default run does (of an empty target, so it is cheap here);
* ``floor`` (in ``--runs`` by default): Airflow's own part, a DAG of ``migration_sync``'s task
  shape (``bench/floor_dag.py`` in a DAG bundle of its own: the same tasks, dependencies,
  trigger rules and pool, read from the sync's DAG) whose tasks do nothing, run as the
  no-backup sync runs: ``plugin_check`` has the scheduler skip ``backup`` and ``env_write``,
  ``rollback`` skips itself, 5 units through the 2-slot pool. What no engine change removes.

Every sync's target is checked afterwards (row counts equal to the source's). Prints seconds,
the ratio to the baseline, the mapped units, each unit's task duration and its own work
(the engine's ``seconds``), and with ``--timeline`` every task's start offset and duration.
Before each measurement the run flushes earlier writes (CHECKPOINT) and waits up to
``--settle`` seconds for idle CPUs, as ``make bench`` does. PostgreSQL: ``MM_PG_URL``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO), str(REPO / "include")]

import datagen  # noqa: E402
import run as bench_run  # noqa: E402


def _load(name: str, path: Path) -> ModuleType:
    """bench/airflow.py by path: imported as ``airflow`` it would shadow the Airflow package."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_airflow = _load("bench_airflow", BENCH / "airflow.py")
DAG = bench_airflow.DAG
FLOOR_DAG = "migration_floor"  # bench/floor_dag.py
RUNS = ("no-backup", "backup", "floor")
FLOOR_UNITS = 5  # the make bench data's tables: one unit each
RULES = {
    "system": {"default": "profile", "independent": {}},
    "user": {"default": "overwrite", "independent": {}},
}
TARGET = 1.5  # full sync <= 1.5 x the two-stream pipe


def log(msg: str) -> None:
    print(
        f"[{time.strftime('%H:%M:%S')}] bench-airflow-bigdata: {msg}", file=sys.stderr, flush=True
    )


def patient(airflow: Any) -> Any:
    """The API client of ``airflow`` with a long timeout and retries on timeouts: on a loaded
    2-core machine the API server sometimes answers a poll after more than 30 s."""
    airflow.client.timeout = httpx.Timeout(120.0)
    call = airflow.call

    def retrying(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(5):
            try:
                return call(*args, **kwargs)
            except httpx.TimeoutException:
                if attempt == 4:
                    raise
                log(f"the API did not answer {args[:2]} in time; asking again")
        return None

    airflow.call = retrying
    return airflow


def warmup(airflow: Any, cluster: Any, conf_base: dict[str, Any]) -> None:
    """One untimed sync of a one-table source: the first task processes of a new home compile
    every module they import (20-25 s here), which a deployment pays once, not per sync."""
    source, target = cluster.create("warmup_src"), cluster.create("warmup_dst")
    bench_run.run_sql(cluster.dsn(source), ["CREATE TABLE warmup AS SELECT 1 AS id"])
    airflow.set_connection("bench_warmup_src", cluster.dsn(source))
    airflow.set_connection("bench_warmup_dst", cluster.dsn(target))
    conf = {
        **conf_base,
        "source_conn_id": "bench_warmup_src",
        "target_conn_id": "bench_warmup_dst",
        "skip_backup": True,
    }
    res = bench_airflow.timed_run(airflow, conf, "warm-up")
    log(f"warm-up sync (untimed): {res['state']} in {res['seconds']:.1f} s")
    cluster.drop(source)
    cluster.drop(target)


def sync_shape() -> dict[str, Any]:
    """``migration_sync``'s task shape (ids, upstream tasks, trigger rules, pools) for the floor DAG."""
    # bench/ (on sys.path for datagen and run) holds airflow.py: out while Airflow is imported
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    try:
        from migration_manager.airflow import task_ids

        dag = _load("mm_sync_dag", REPO / "dags" / "migration_sync.py").migration_sync()
    finally:
        sys.path[:] = saved
    tasks = [
        {
            "task_id": t.task_id,
            "upstream": sorted(t.upstream_task_ids),
            "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
            "pool": t.pool if t.pool != "default_pool" else None,
        }
        for t in dag.topological_sort()
    ]
    return {"tasks": tasks, "mapped": task_ids.APPLY_TABLE, "map_source": task_ids.PLAN}


def floor_bundle(workdir: Path) -> dict[str, str]:
    """A DAG bundle beside the project's holding bench/floor_dag.py and the sync's shape: the
    environment of bin/airflow-local that adds it."""
    folder = workdir / "floor_bundle"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH / "floor_dag.py", folder / "floor_dag.py")
    (folder / "floor_shape.json").write_text(json.dumps(sync_shape(), indent=1))
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "bench-floor", "classpath": local, "kwargs": {"path": str(folder)}},
    ]
    return {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles)}


def floor_run(airflow: Any) -> dict[str, Any]:
    """The floor DAG as the no-backup sync runs: plugin_check has the scheduler skip backup and
    env_write, rollback skips itself in its task process, FLOOR_UNITS units through the pool."""
    from migration_manager.airflow import task_ids  # imported by sync_shape already

    airflow.wait_for_dag(FLOOR_DAG)
    airflow.unpause(FLOOR_DAG)
    conf = {
        "units": FLOOR_UNITS,
        "skipper": task_ids.PLUGIN_CHECK,
        "skip": [task_ids.BACKUP, task_ids.ENV_WRITE],
        "skip_self": [task_ids.ROLLBACK],
    }
    res = bench_airflow.timed_run(airflow, conf, "floor", dag_id=FLOOR_DAG)
    res["run_span_seconds"] = run_span(airflow, res["run_id"], FLOOR_DAG)
    res["skip_backup"] = True
    res["unit_details"] = []
    return res


def run_span(airflow: Any, run_id: str, dag_id: str = DAG) -> float | None:
    """The run's own duration by the API's timestamps: queued (or started) to its end."""
    run = airflow.run(dag_id, run_id)
    start = bench_airflow._ts(run.get("queued_at")) or bench_airflow._ts(run.get("start_date"))
    end = bench_airflow._ts(run.get("end_date"))
    return round(end - start, 2) if start and end else None


def unit_details(airflow: Any, run_id: str) -> list[dict[str, Any]]:
    """Each mapped ``apply_table``: its tables, task duration and the unit's own work (XCom)."""
    out = []
    for ti in airflow.task_instances(DAG, run_id):
        if ti["task_id"] != "apply_table" or ti["map_index"] < 0:
            continue
        start = bench_airflow._ts(ti.get("start_date"))
        end = bench_airflow._ts(ti.get("end_date"))
        entry = airflow.call(
            "GET",
            f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/apply_table/xcomEntries/return_value",
            params={"map_index": ti["map_index"], "deserialize": True},
            expect=(200, 404),
        )
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, str):
            value = json.loads(value)
        value = value if isinstance(value, dict) else {}
        out.append(
            {
                "map_index": ti["map_index"],
                "unit": ti.get("rendered_map_index") or str(ti["map_index"]),
                "state": ti["state"],
                "task_seconds": round(end - start, 2) if start and end else None,
                "work_seconds": value.get("seconds"),
                "tables": {
                    t["table"]: {"seconds": t["seconds"], "inserted": t["inserted"]}
                    for t in value.get("tables") or ()
                },
            }
        )
    return sorted(out, key=lambda u: -(u["task_seconds"] or 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="row counts x this (1.0: 2.2 M rows)"
    )
    parser.add_argument(
        "--runs",
        default=",".join(RUNS),
        help=(
            "comma-separated runs to time: syncs into a new empty target (no-backup, backup) and "
            "floor: a DAG of the no-backup sync's task shape whose tasks do nothing"
        ),
    )
    parser.add_argument("--baseline-repeat", type=int, default=2,
                        help="pipe measurements before the syncs and as many after (best counts)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=60.0,
                        help="before each measurement wait up to this many seconds for idle CPUs")  # fmt: skip
    parser.add_argument("--pool-slots", type=int, default=None, help="slots of migration_units")
    parser.add_argument("--parallelism", type=int, default=None,
                        help="task processes at once (airflow-local's default)")  # fmt: skip
    parser.add_argument("--timeline", action="store_true", help="print every run's task timeline")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an Airflow setting for this run")  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / "airflow_bigdata.json"
    )
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="time the first sync of a new Airflow home too (cold bytecode cache)")  # fmt: skip
    parser.add_argument("--keep-logs", type=Path, default=None, metavar="DIR",
                        help="copy bin/airflow-local's logs (task logs included) here at the end")  # fmt: skip
    args = parser.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not runs or any(r not in RUNS for r in runs) or args.scale <= 0:
        parser.error(f"--runs takes {', '.join(RUNS)}; --scale > 0")
    if args.baseline_repeat < 1:
        parser.error("--baseline-repeat >= 1")
    env = bench_airflow.settings_env(args.set, args.pool_slots)

    cluster = bench_run.Cluster(os.environ.get("MM_PG_URL") or bench_run.DEFAULT_URL)
    workdir = Path(tempfile.mkdtemp(prefix="mm-bench-bigdata-"))
    # bench/run.py's Runner gives the baseline and the settling; it wants these of its options
    runner = bench_run.Runner(
        argparse.Namespace(settle=args.settle, json=str(args.json), profile=False),
        cluster,
        workdir,
    )
    rows = datagen.rows_at(args.scale)
    load = [round(os.getloadavg()[0], 2)]
    try:
        cluster.drop_orphans()
        log(f"generating {sum(rows.values()):,} rows in {len(rows)} tables (scale {args.scale})")
        t0 = time.monotonic()
        src_name = cluster.create("src")
        src = cluster.dsn(src_name)
        bench_run.generate(src, rows)
        with psycopg.connect(src) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        src_mb = size[0] / 2**20 if size else 0.0
        log(f"source {src_name}: {src_mb:.0f} MB in {time.monotonic() - t0:.0f} s")

        baselines: list[dict[str, Any]] = []

        def measure_baseline(when: str) -> None:
            for i in range(args.baseline_repeat):
                res = runner.baseline(src, rows, f"base_{when}{i}")
                res["when"] = when
                baselines.append(res)
                log(f"baseline ({when}) {res['seconds']:.2f} s, load {res['load_after']}")

        measure_baseline("before")
        conf_base = {
            "source_conn_id": "bench_source",
            "profile": "generic",
            "rules": RULES,
            "on_missing_env": "fail",
            "on_missing_plugins": "continue",
            "on_destructive": "fail",
        }
        results: list[dict[str, Any]] = []
        t0 = time.monotonic()
        if "floor" in runs:
            env = {**floor_bundle(workdir), **env}
        with bench_airflow.airflow_local(workdir, args.parallelism, env) as airflow:
            log(f"Airflow up in {time.monotonic() - t0:.0f} s")
            patient(airflow)
            airflow.set_connection("bench_source", src)
            airflow.unpause(DAG)
            if args.warmup:
                warmup(airflow, cluster, conf_base)
            for i, label in enumerate(runs):
                if label == "floor":
                    runner.ready()
                    log("floor (the sync's task shape, tasks doing nothing) ...")
                    res = floor_run(airflow)
                    res["load_after"] = round(os.getloadavg()[0], 2)
                    res["cpu_idle_before"] = round(runner.idle_before, 2)
                    results.append(res)
                    log(f"floor: {res['state']} in {res['seconds']:.1f} s")
                    continue
                target = cluster.create(f"target{i}")
                conn_id = f"bench_target_{i}"
                airflow.set_connection(conn_id, cluster.dsn(target))
                conf = {
                    **conf_base,
                    "target_conn_id": conn_id,
                    "skip_backup": label == "no-backup",
                }
                runner.ready()
                log(f"full sync ({label}) ...")
                res = bench_airflow.timed_run(airflow, conf, f"full sync {label}")
                res["load_after"] = round(os.getloadavg()[0], 2)
                res["skip_backup"] = conf["skip_backup"]
                res["cpu_idle_before"] = round(runner.idle_before, 2)
                res["run_span_seconds"] = run_span(airflow, res["run_id"])
                res["unit_details"] = unit_details(airflow, res["run_id"])
                if res["state"] == "success":
                    runner.check(cluster.dsn(target), rows, f"sync {label}")
                results.append(res)
                log(f"full sync ({label}): {res['state']} in {res['seconds']:.1f} s")
                cluster.drop(target)
            if args.keep_logs:
                shutil.copytree(workdir / "airflow" / "logs", args.keep_logs, dirs_exist_ok=True)
                log(f"Airflow's logs copied to {args.keep_logs}")
        measure_baseline("after")
        cluster.drop(src_name)
    finally:
        cluster.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    load.append(round(os.getloadavg()[0], 2))
    base = min(b["seconds"] for b in baselines)
    report(args, rows, src_mb, base, baselines, results, load)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "scale": args.scale,
                "rows": rows,
                "source_mb": round(src_mb, 1),
                "baseline_seconds": base,
                "baselines": baselines,
                "runs": results,
                "load_average_1min": load,
                "env": env,
                "parallelism": args.parallelism,
                "cpus": os.cpu_count(),
            },
            indent=1,
        )
    )
    log(f"JSON in {args.json}")
    return 0 if all(r["state"] == "success" for r in results) else 1


def report(
    args: argparse.Namespace,
    rows: dict[str, int],
    src_mb: float,
    base: float,
    baselines: list[dict[str, Any]],
    results: list[dict[str, Any]],
    load: list[float],
) -> None:
    print(
        f"\nLarge data under the scheduler: {sum(rows.values()):,} rows in {len(rows)} tables, "
        f"source {src_mb:.0f} MB (scale {args.scale:g}); {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} at start, {load[1]:.1f} at end"
    )
    print(
        "baseline psql \\copy pipe (binary), table by table: "
        + ", ".join(f"{b['seconds']:.2f}" for b in baselines)
        + f" s; best {base:.2f} s"
    )
    print(
        f"{'run':<22} {'state':<8} {'seconds':>8} {'x pipe':>7} {'units':>6}  {'backup':<8} "
        "target  (queued -> end by the API's timestamps)"
    )
    for r in results:
        ratio = r["seconds"] / base
        met = "met" if ratio <= TARGET and r["state"] == "success" else "NOT met"
        if r["run"] == "floor":
            met = "(Airflow's own part: no engine work)"
        else:
            met = f"<= {TARGET:.1f}x: {met}"
        print(
            f"{r['run']:<22} {r['state']:<8} {r['seconds']:>8.1f} {ratio:>6.2f}x {r['units']:>6}  "
            f"{'skipped' if r['skip_backup'] else r['backup'] or '-':<8} {met}  ({r['run_span_seconds']} s)"
        )
    floor = next((r for r in results if r["run"] == "floor"), None)
    if floor:
        print(
            f"floor: the sync's task shape with tasks that do nothing ({FLOOR_UNITS} units through the "
            f"pool) takes {floor['seconds']:.1f} s = {floor['seconds'] / base:.2f}x the pipe, "
            f"{floor['seconds'] / (TARGET * base):.0%} of the {TARGET:.1f}x budget ({TARGET * base:.1f} s)"
        )
    for r in results:
        if r["run"] == "floor" and not args.timeline:
            continue
        print(f"\n{r['run']}: units (task seconds / the unit's own work seconds: tables)")
        for u in r["unit_details"]:
            tables = ", ".join(f"{t} {v['seconds']:.1f}" for t, v in u["tables"].items())
            print(
                f"  {u['task_seconds']!s:>7} / {u['work_seconds']!s:>7}  {u['state']:<8} "
                f"[{u['map_index']}] {u['unit']}: {tables}"
            )
        if args.timeline:
            print(f"{r['run']}: timeline (start offset from the run's queueing, duration)")
            for t in r["timeline"]:
                print(f"  {t['start']!s:>7} {t['seconds']!s:>6}  {t['state']:<9} {t['task']}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench-airflow-bigdata: interrupted; databases dropped", file=sys.stderr)
        sys.exit(130)
