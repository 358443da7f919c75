"""A fresh clone runs alone: nothing in the project reads the workplace's shared folder beside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A path into a sibling "shared" folder, written as text or built with pathlib.
OUTSIDE = re.compile(
    r"\.\./shared|parent\s*/\s*[\"']shared[\"']|[\"']shared[\"']\s*/|shared/(notes|fixtures|spec)/"
)


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [REPO / name for name in out.splitlines() if (REPO / name).is_file()]


def test_no_file_refers_to_the_shared_folder() -> None:
    offenders = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "copy what the project needs into the repository:\n" + "\n".join(
        offenders
    )


def test_the_nocobase_fixture_pair_is_in_the_repository() -> None:
    folder = REPO / "tests" / "fixtures" / "nocobase"
    for name in (
        "dev_staging.sql",
        "dev_prod.sql",
        "dev_staging_aes_key.dat",
        "dev_prod_aes_key.dat",
    ):
        assert (folder / name).stat().st_size > 0, name
