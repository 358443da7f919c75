"""``bench/run.py`` runs end to end at a tiny scale and reports every ratio (never its speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgtools import PG_URL, REPO, rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_bench_runs_at_a_tiny_scale_and_prints_the_ratios(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    env = {**os.environ, "MM_PG_URL": PG_URL}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "run.py"), "--scale", "0.01",
         "--big-factor", "3", "--settle", "0", "--json", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the benchmark drops its databases before it exits
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"bench/run.py did not finish in 300 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    text = stdout
    for label in (
        "baseline: psql \\copy pipe",
        "engine create (overwrite rules)",
        "engine apply overwrite, empty target",
        "create + apply overwrite",
        "engine apply overwrite into existing",
        "engine apply upsert into existing",
        "RSS flatness",
    ):
        assert label in text, label
    assert "x base" in text and "Targets met:" in text

    res = json.loads(out.read_text())
    for key in ("create", "apply_empty", "create_plus_apply", "apply_existing", "apply_upsert"):
        m = res["measurements"][key]
        assert m["ratio"] is not None and m["ratio"] > 0, key
    for key in ("create", "apply_empty", "apply_existing", "apply_upsert"):
        assert res["measurements"][key]["rss_mb"] > 0, key
    assert len(res["targets"]) == 6
    assert all(isinstance(t["met"], bool) for t in res["targets"])
    # Every throwaway database of this run is gone.
    prefix = f"mmbench_{res['run_id']}_"
    left = [d for (d,) in rows(PG_URL, "SELECT datname FROM pg_database") if d.startswith(prefix)]
    assert left == []
