"""Benchmark: the engine against a plain ``psql \\copy`` pipe, on NocoBase-shaped data.

    make bench BENCH_ARGS="--scale 0.05"        # quick smoke run
    python bench/run.py [--scale 1.0] [--repeat 1] [--big-table fields] [--big-factor 10]

PostgreSQL comes from ``MM_PG_URL`` (an admin URL; default
``postgresql://postgres@127.0.0.1:5432/postgres``). Everything runs on throwaway databases
named ``mmbench_<run>_...``, all dropped at the end, also on error or Ctrl-C.

Measured in one run (each ``--repeat`` times, on fresh target databases every time):

* baseline: per table, ``psql -c "\\copy t to stdout (format binary)"`` piped into
  ``psql -c "\\copy t from stdin (format binary)"``, into a target that already has the empty
  tables (same DDL), tables one after another;
* engine create (overwrite rules): ``create_migration`` to a file;
* engine apply, overwrite, into an empty database (the engine creates the tables); every apply
  runs ``--workers`` table units at once (default 2), as a DAG run's mapped ``apply_table``
  tasks do in the pool ``migration_units`` (2 slots by default), each unit in its own
  transaction on its own connection;
* engine apply, overwrite, into a database holding the previous data (10 % of rows changed,
  5 % missing, 5 % extra);
* engine create (upsert rules; ``requestLogs`` has no key and gets overwrite) and its apply
  into a database holding the previous data;
* peak RSS of each engine call (each runs in its own process, ``bench/_one.py``);
* RSS flatness: create and apply of one table alone (``--big-table``) at 1x and
  ``--big-factor`` x its rows.

Seconds of engine calls exclude Python start-up and imports. With ``--repeat`` the best of
the repeats counts (other work only adds time). Before each measurement the run waits up to
``--settle`` seconds for idle CPUs (a shared 2-core machine skews timings badly); the idle
fraction seen and the load average after each measurement are in the JSON. Results: a table
on stdout and JSON in ``bench/results/latest.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
OVERWRITE_RULES = {"user": {"default": "overwrite"}}
UPSERT_RULES = {"user": {"default": "upsert", "independent": {"requestLogs": "overwrite"}}}
CHUNK_ROWS = 250_000  # rows per INSERT ... generate_series statement when generating
RSS_SLACK_MB = 30.0
OWNER_TAG = "mmbench:"  # database comment: OWNER_TAG + {"host": ..., "pid": ...}
SETTLE_IDLE = 0.85  # --settle waits for this idle fraction of all CPUs before measuring

# (key, label, target ratio to the baseline or None)
ROWS = (
    ("baseline", "baseline: psql \\copy pipe, table by table", None),
    ("create", "engine create (overwrite rules) -> file", None),
    ("apply_empty", "engine apply overwrite, empty target", 1.0),
    ("create_plus_apply", "create + apply overwrite (empty target)", 1.3),
    ("apply_existing", "engine apply overwrite into existing", 1.0),
    ("create_upsert", "engine create (upsert rules) -> file", None),
    ("apply_upsert", "engine apply upsert into existing", 1.5),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dsn_for(base: str, database: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{database}"))


def psql_bin() -> str:
    bindir = os.environ.get("MM_PG_BINDIR")
    if bindir and Path(bindir, "psql").exists():
        return str(Path(bindir, "psql"))
    found = shutil.which("psql")
    if not found:
        sys.exit("bench: psql is needed for the baseline (apt-get install postgresql-client)")
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Cluster:
    """Creates throwaway databases on the server of ``url`` and drops them all at the end."""

    url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    made: list[str] = field(default_factory=list)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def dsn(self, name: str) -> str:
        return dsn_for(self.url, name)

    def create(self, role: str, *, template: str | None = None) -> str:
        name = f"mmbench_{self.run_id}_{role}"
        self.made.append(name)
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if template is None:
                conn.execute(f'CREATE DATABASE "{name}"')
            else:
                # A file-level copy of the template (faster than WAL-logging every page);
                # the template must have no other sessions: retry briefly if one lingers.
                for attempt in range(20):
                    try:
                        conn.execute(
                            f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'
                        )
                        break
                    except psycopg.errors.ObjectInUse:
                        if attempt == 19:
                            raise
                        time.sleep(0.25)
            # Who made it: a later run drops it if this process dies without cleaning up.
            owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(f"{OWNER_TAG} {owner}")
                )
            )
        return name

    def drop_orphans(self) -> None:
        """Drop benchmark databases left by runs on this host whose process is gone
        (killed with SIGKILL, say): they are named ``mmbench_...`` and commented with
        their creator's host and pid."""
        with self.admin() as conn:
            found = conn.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname LIKE 'mmbench\\_%'"
            ).fetchall()
        for name, comment in found:
            if not comment or not comment.startswith(OWNER_TAG):
                continue
            try:
                owner = json.loads(comment[len(OWNER_TAG) :])
            except ValueError:
                continue
            if owner.get("host") != socket.gethostname() or _alive(int(owner.get("pid", 0))):
                continue
            log(f"dropping {name}, left by an earlier run (pid {owner['pid']} is gone)")
            self.drop(name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.made:
            self.made.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.made)):
            try:
                self.drop(name)
            except Exception as exc:  # keep dropping the others
                print(f"bench: could not drop database {name}: {exc}", file=sys.stderr)

    def checkpoint(self) -> None:
        """Flush earlier writes so that a measurement does not pay for the previous one's."""
        try:
            with self.admin() as conn:
                conn.execute("CHECKPOINT")
        except psycopg.Error:
            pass  # not superuser: measure without


def cpu_idle(seconds: float) -> float:
    """Fraction of the machine's CPU time spent idle over ``seconds`` (1.0 without /proc)."""

    def sample() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0


def run_sql(dsn: str, statements: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt)


def parallel(dsn: str, jobs: list[list[str]], workers: int = 2) -> None:
    """Run lists of statements, each list on its own connection, ``workers`` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(run_sql, dsn, job) for job in jobs]:
            f.result()


def generate(dsn: str, rows: dict[str, int]) -> None:
    """Create the tables of ``rows`` and fill them server-side, on two connections at once."""
    tables = [datagen.ALL[name] for name in rows]
    run_sql(dsn, [t.ddl for t in tables])
    inserts: list[list[str]] = []
    for t in tables:
        n = rows[t.name]
        for lo in range(1, n + 1, CHUNK_ROWS):
            inserts.append([t.insert_sql(lo, min(n, lo + CHUNK_ROWS - 1))])
    parallel(dsn, inserts)
    parallel(dsn, [[t.key_ddl] for t in tables if t.key_ddl])
    parallel(dsn, [[f"VACUUM ANALYZE {t.ident}"] for t in tables])


def make_previous(dsn: str, rows: dict[str, int]) -> None:
    """Turn a copy of the source into the target's previous state (see datagen)."""
    jobs = [
        datagen.previous_state_sql(datagen.ALL[name], n)
        + [f"VACUUM ANALYZE {datagen.ALL[name].ident}"]
        for name, n in rows.items()
    ]
    parallel(dsn, jobs)


def count_rows(dsn: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # type: ignore[index]
            for t in tables
        }


class Runner:
    def __init__(self, args: argparse.Namespace, cluster: Cluster, workdir: Path):
        self.args = args
        self.cluster = cluster
        self.workdir = workdir
        self.logdir = Path(args.json).resolve().parent / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.setdefault("MM_PROGRESS_SECONDS", "3600")  # no progress lines mid-measurement
        self.idle_before = 1.0

    def ready(self) -> None:
        """Before a timed measurement: flush earlier writes, then wait (up to ``--settle``
        seconds) for the CPUs to be mostly idle, since other work on a 2-core machine skews
        any timing."""
        self.cluster.checkpoint()
        if self.args.settle <= 0:
            return
        deadline = time.monotonic() + self.args.settle
        while True:
            idle = cpu_idle(1.0)
            if idle >= SETTLE_IDLE or time.monotonic() >= deadline:
                break
        self.idle_before = idle
        if idle < SETTLE_IDLE:
            log(f"  note: CPUs only {idle:.0%} idle before this measurement (others are busy)")

    def one(self, tag: str, *argv: str) -> dict[str, Any]:
        """Run bench/_one.py in its own process; returns its JSON result."""
        cmd = [sys.executable, str(REPO / "bench" / "_one.py"), *argv]
        if self.args.profile:
            cmd += ["--profile", str(self.logdir / f"{tag}.prof")]
        logfile = self.logdir / f"{tag}.log"
        with logfile.open("w") as err:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env)
        if proc.returncode != 0:
            tail = "".join(logfile.read_text().splitlines(keepends=True)[-30:])
            raise RuntimeError(f"{tag}: bench/_one.py failed (exit {proc.returncode}):\n{tail}")
        res = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
        res["cpu_idle_before"] = round(self.idle_before, 2)
        res["load_after"] = round(os.getloadavg()[0], 2)
        return res

    def baseline(self, source: str, rows: dict[str, int], tag: str) -> dict[str, Any]:
        target = self.cluster.create(f"{tag}_base")
        dsn = self.cluster.dsn(target)
        run_sql(dsn, [s for name in rows for s in datagen.empty_sql(datagen.ALL[name])])
        self.ready()
        psql = psql_bin()
        per_table: dict[str, float] = {}
        started = time.perf_counter()
        for name in rows:
            t0 = time.perf_counter()
            ident = datagen.ALL[name].ident
            out = subprocess.Popen(
                [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source,
                 "-c", f"\\copy {ident} to stdout (format binary)"],
                stdout=subprocess.PIPE,
            )  # fmt: skip
            into = subprocess.run(
                [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn,
                 "-c", f"\\copy {ident} from stdin (format binary)"],
                stdin=out.stdout, stdout=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            assert out.stdout is not None
            out.stdout.close()
            if out.wait() != 0 or into.returncode != 0:
                raise RuntimeError(f"baseline: the psql pipe of {name} failed")
            per_table[name] = round(time.perf_counter() - t0, 3)
        seconds = time.perf_counter() - started
        self.check(dsn, rows, "baseline")
        self.cluster.drop(target)
        return {
            "seconds": round(seconds, 3),
            "tables": per_table,
            "cpu_idle_before": round(self.idle_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }

    def check(self, dsn: str, expected: dict[str, int], what: str) -> None:
        got = count_rows(dsn, list(expected))
        if got != expected:
            raise RuntimeError(f"{what}: row counts {got} differ from the expected {expected}")

    def create(self, source: str, rules: dict[str, Any], tag: str) -> tuple[dict[str, Any], Path]:
        path = self.workdir / f"{tag}.mig"
        self.ready()
        res = self.one(tag, "create", source, str(path), json.dumps(rules))
        return res, path

    def apply(
        self,
        path: Path,
        tag: str,
        expected: dict[str, int],
        *,
        previous_of: str | None = None,
        rows: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Apply ``path`` into a fresh database: empty, or a copy of ``previous_of`` made older."""
        name = self.cluster.create(tag, template=previous_of)
        dsn = self.cluster.dsn(name)
        if previous_of is not None:
            t0 = time.perf_counter()
            make_previous(dsn, rows or {})
            log(f"  target with the previous data ready in {time.perf_counter() - t0:.1f} s")
        self.ready()
        res = self.one(tag, "apply", str(path), dsn, "--workers", str(self.args.workers))
        self.check(dsn, expected, tag)
        self.cluster.drop(name)
        return res


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best (smallest) of the repeats: other work only ever adds time."""
    out: dict[str, Any] = {"seconds": round(min(r["seconds"] for r in runs), 3), "runs": runs}
    if runs and "rss_mb" in runs[0]:
        out["rss_mb"] = max(r["rss_mb"] for r in runs)
        out["rss_before_mb"] = max(r["rss_before_mb"] for r in runs)
    if runs and "bytes" in runs[0]:
        out["bytes"] = runs[0]["bytes"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark the migration engine against a psql \\copy pipe."
    )
    ap.add_argument("--scale", type=float, default=1.0, help="row counts x this (1.0: 2.2 M rows)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="repeat each measurement (the best is kept)"
    )
    ap.add_argument("--big-table", default="fields", choices=datagen.TABLES,
                    help="table measured alone at 1x and --big-factor x for RSS flatness")  # fmt: skip
    ap.add_argument("--big-factor", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2,
                    help="table units applied at once, as the mapped apply_table tasks do "
                    "(2: the default slots of the pool migration_units; 1: one after another)")  # fmt: skip
    ap.add_argument("--settle", type=float, default=60.0,
                    help="before each measurement wait up to this many seconds for idle CPUs "
                    "(0: do not wait)")  # fmt: skip
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "latest.json"))
    ap.add_argument("--profile", action="store_true",
                    help="cProfile every engine call into <json dir>/logs/<tag>.prof")  # fmt: skip
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.scale <= 0 or args.big_factor < 1 or args.workers < 1:
        ap.error("--repeat >= 1, --scale > 0, --big-factor >= 1 and --workers >= 1")

    url = os.environ.get("MM_PG_URL") or DEFAULT_URL
    cluster = Cluster(url)
    workdir = Path(tempfile.mkdtemp(prefix="mmbench-"))

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        cluster.drop_orphans()
        results = run(args, cluster, workdir)
    finally:
        cluster.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results written to {path}")
    return 0


def run(args: argparse.Namespace, cluster: Cluster, workdir: Path) -> dict[str, Any]:
    runner = Runner(args, cluster, workdir)
    rows = datagen.rows_at(args.scale)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with cluster.admin() as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    log(f"generating {sum(rows.values()):,} rows in {len(rows)} tables (scale {args.scale})")
    t0 = time.perf_counter()
    src_name = cluster.create("src")
    src = cluster.dsn(src_name)
    generate(src, rows)
    with psycopg.connect(src) as conn:
        src_mb = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20  # type: ignore[index]
    gen_seconds = time.perf_counter() - t0
    log(f"source {src_name}: {src_mb:.0f} MB, generated in {gen_seconds:.1f} s")

    upsert_expected = {
        name: n + (max(1, n // 20) if name != "requestLogs" else 0) for name, n in rows.items()
    }
    m: dict[str, list[dict[str, Any]]] = {k: [] for k, _l, _t in ROWS}
    for r in range(1, args.repeat + 1):
        tag = f"r{r}"
        log(f"repeat {r}/{args.repeat}: baseline")
        m["baseline"].append(runner.baseline(src, rows, tag))
        log(f"  baseline {m['baseline'][-1]['seconds']:.2f} s; engine create (overwrite)")
        res, ow_file = runner.create(src, OVERWRITE_RULES, f"{tag}_create")
        m["create"].append(res)
        log(f"  create {res['seconds']:.2f} s; apply into an empty target")
        res = runner.apply(ow_file, f"{tag}_apply_empty", rows)
        m["apply_empty"].append(res)
        m["create_plus_apply"].append(
            {"seconds": round(m["create"][-1]["seconds"] + res["seconds"], 3)}
        )
        log(f"  apply (empty) {res['seconds']:.2f} s; apply overwrite into existing")
        res = runner.apply(ow_file, f"{tag}_apply_existing", rows, previous_of=src_name, rows=rows)
        m["apply_existing"].append(res)
        ow_file.unlink()
        log(f"  apply (existing) {res['seconds']:.2f} s; engine create (upsert)")
        res, up_file = runner.create(src, UPSERT_RULES, f"{tag}_create_upsert")
        m["create_upsert"].append(res)
        log(f"  create (upsert) {res['seconds']:.2f} s; apply upsert into existing")
        res = runner.apply(
            up_file, f"{tag}_apply_upsert", upsert_expected, previous_of=src_name, rows=rows
        )
        m["apply_upsert"].append(res)
        up_file.unlink()
        log(f"  apply (upsert) {res['seconds']:.2f} s")
    cluster.drop(src_name)

    big = big_table(args, cluster, runner, rows)

    summary = {k: summarize(v) for k, v in m.items()}
    base = summary["baseline"]["seconds"]
    targets = []
    for key, label, limit in ROWS:
        s = summary[key]
        s["label"] = label
        s["ratio"] = round(s["seconds"] / base, 3) if base else None
        if limit is not None:
            targets.append(
                {
                    "what": f"{label} <= {limit:.1f}x baseline",
                    "value": s["ratio"],
                    "limit": limit,
                    "met": s["ratio"] is not None and s["ratio"] <= limit,
                }
            )
    for kind in ("create", "apply"):
        one, ten = big[f"{kind}_1x"]["rss_mb"], big[f"{kind}_big"]["rss_mb"]
        targets.append(
            {
                "what": f"{kind} peak RSS at {args.big_factor:g}x {args.big_table} "
                f"<= 1x + {RSS_SLACK_MB:.0f} MB",
                "value": round(ten - one, 1),
                "limit": RSS_SLACK_MB,
                "met": ten - one <= RSS_SLACK_MB,
            }
        )
    return {
        "run_id": cluster.run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgresql": server,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "args": vars(args),
        "rows": rows,
        "total_rows": sum(rows.values()),
        "source_mb": round(src_mb, 1),
        "generate_seconds": round(gen_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "measurements": summary,
        "big_table": big,
        "targets": targets,
    }


def big_table(
    args: argparse.Namespace, cluster: Cluster, runner: Runner, rows: dict[str, int]
) -> dict[str, Any]:
    """Create + apply of ``--big-table`` alone at 1x and at ``--big-factor`` x its rows."""
    name = args.big_table
    n1 = rows[name]
    nbig = max(n1 + 1, round(n1 * args.big_factor))
    out: dict[str, Any] = {"table": name, "rows_1x": n1, "rows_big": nbig}
    for size, n in (("1x", n1), ("big", nbig)):
        log(f"RSS: {name} alone, {n:,} rows")
        runs_c, runs_a = [], []
        src_name = cluster.create(f"big{size}")
        generate(cluster.dsn(src_name), {name: n})
        for r in range(1, args.repeat + 1):
            res, path = runner.create(
                cluster.dsn(src_name), OVERWRITE_RULES, f"r{r}_big{size}_create"
            )
            runs_c.append(res)
            runs_a.append(runner.apply(path, f"r{r}_big{size}_apply", {name: n}))
            path.unlink()
        cluster.drop(src_name)
        out[f"create_{size}"] = summarize(runs_c)
        out[f"apply_{size}"] = summarize(runs_a)
        log(
            f"  create {out[f'create_{size}']['seconds']:.2f} s, "
            f"{out[f'create_{size}']['rss_mb']:.1f} MB; apply "
            f"{out[f'apply_{size}']['seconds']:.2f} s, {out[f'apply_{size}']['rss_mb']:.1f} MB"
        )
    return out


def report(res: dict[str, Any]) -> None:
    ms = res["measurements"]
    limits = {key: limit for key, _label, limit in ROWS}
    print()
    print(
        f"Benchmark: {res['total_rows']:,} rows in {len(res['rows'])} tables "
        f"({', '.join(f'{k} {v:,}' for k, v in res['rows'].items())}); "
        f"source {res['source_mb']:.0f} MB; best of {res['args']['repeat']}; "
        f"applies run {res['args']['workers']} table unit(s) at once; "
        f"PostgreSQL {res['machine']['postgresql']}, {res['machine']['cpus']} CPUs, "
        "load average %.1f at start, %.1f at end" % tuple(res["machine"]["load_average_1min"])
    )
    head = f"{'measurement':<42} {'seconds':>8} {'x base':>7} {'peak RSS MB':>11}  {'target':<8} status"
    print(head)
    print("-" * len(head))
    for key, label, _limit in ROWS:
        s = ms[key]
        rss = f"{s['rss_mb']:.1f}" if "rss_mb" in s else "-"
        limit = limits[key]
        target = f"<= {limit:.1f}x" if limit is not None else ""
        status = ""
        if limit is not None:
            status = "MET" if s["ratio"] <= limit else "NOT MET"
        extra = f"  file {s['bytes'] / 2**20:.1f} MB" if "bytes" in s else ""
        print(
            f"{label:<42} {s['seconds']:>8.2f} {s['ratio']:>6.2f}x {rss:>11}  {target:<8} {status}{extra}"
        )
    big = res["big_table"]
    print()
    print(
        f"RSS flatness: {big['table']} alone, {big['rows_1x']:,} rows (1x) vs "
        f"{big['rows_big']:,} rows ({res['args']['big_factor']:g}x)"
    )
    print(f"{'':<10} {'1x MB':>8} {'big MB':>8} {'delta':>7} {'1x s':>7} {'big s':>7}  target")
    for kind in ("create", "apply"):
        one, ten = big[f"{kind}_1x"], big[f"{kind}_big"]
        delta = ten["rss_mb"] - one["rss_mb"]
        status = "MET" if delta <= RSS_SLACK_MB else "NOT MET"
        print(
            f"{kind:<10} {one['rss_mb']:>8.1f} {ten['rss_mb']:>8.1f} {delta:>+7.1f} "
            f"{one['seconds']:>7.2f} {ten['seconds']:>7.2f}  <= +{RSS_SLACK_MB:.0f} MB {status}"
        )
    print()
    print(
        "Per table, seconds (first repeat): baseline pipe / engine apply empty / existing / upsert"
    )
    base_t = ms["baseline"]["runs"][0]["tables"]
    for name in res["rows"]:
        cells = [base_t.get(name, 0.0)] + [
            ms[k]["runs"][0]["tables"].get(name, {}).get("seconds", 0.0)
            for k in ("apply_empty", "apply_existing", "apply_upsert")
        ]
        print(f"  {name:<18} " + " ".join(f"{c:>7.2f}" for c in cells))
    print()
    met = sum(t["met"] for t in res["targets"])
    print(f"Targets met: {met}/{len(res['targets'])}")
    for t in res["targets"]:
        print(f"  {'MET    ' if t['met'] else 'NOT MET'}  {t['what']} (value {t['value']})")
    print(
        f"Total run {res['total_seconds']:.0f} s (data generation {res['generate_seconds']:.0f} s)."
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; databases dropped", file=sys.stderr)
        sys.exit(130)
