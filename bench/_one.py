"""One engine measurement in its own process, so that its peak RSS is its own.

    python bench/_one.py create SOURCE_DSN OUT_FILE RULES_JSON [--profile OUT.prof]
    python bench/_one.py apply FILE TARGET_DSN [--workers N] [--profile OUT.prof]

Prints one JSON line on stdout: ``seconds`` (the engine call only, imports excluded),
``rss_mb`` (peak resident set of this process, VmHWM; ``ru_maxrss`` as a fallback),
``rss_before_mb`` (after imports, before the engine call) and what the engine returned.
Engine logs (INFO) go to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB. VmHWM belongs to the process's own address space
    (ru_maxrss may carry the parent's high-water mark over a vfork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def do_create(source: str, out: str, rules: str) -> dict[str, Any]:
    from migration_manager.create import create_migration

    with open(out, "wb") as fh:
        result, _manifest = create_migration(source, fh, profile="generic", rules=json.loads(rules))
    return {"rows": result.rows, "bytes": Path(out).stat().st_size, "tables": result.tables}


def do_apply(path: str, target: str, workers: int) -> dict[str, Any]:
    from migration_manager.archive import open_archive
    from migration_manager.execute import execute_migration

    tables: dict[str, Any] = {}
    with open_archive(Path(path)) as reader:
        plan, results = execute_migration(reader, target, workers=workers)
    for unit in results:
        for t in unit.tables:
            tables[t.table] = {
                "inserted": t.inserted,
                "updated": t.updated,
                "deleted": t.deleted,
                "unchanged": t.unchanged,
                "seconds": t.seconds,
                "ddl": len(t.ddl),
            }
    return {"units": len(plan.units), "workers": workers, "tables": tables}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("create")
    c.add_argument("source")
    c.add_argument("out")
    c.add_argument("rules")
    a = sub.add_parser("apply")
    a.add_argument("file")
    a.add_argument("target")
    a.add_argument("--workers", type=int, default=1, help="table units applied at once")
    for p in (c, a):
        p.add_argument("--profile", help="write cProfile stats of the engine call here")
    args = ap.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    # Import the engine before measuring, so rss_before_mb and seconds leave imports out.
    import migration_manager.create  # noqa: F401
    import migration_manager.execute  # noqa: F401

    if args.what == "create":

        def call() -> dict[str, Any]:
            return do_create(args.source, args.out, args.rules)
    else:

        def call() -> dict[str, Any]:
            return do_apply(args.file, args.target, args.workers)

    before = peak_rss_mb()
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    out = call()
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    if profiler:
        profiler.dump_stats(args.profile)
    out.update(seconds=round(seconds, 3), rss_mb=peak_rss_mb(), rss_before_mb=before)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
