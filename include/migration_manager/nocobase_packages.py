"""NocoBase's packages read for their collection files: the generator of the table knowledge.

    python -m migration_manager.nocobase_packages 2.2.15            # packages from the npm registry
    python -m migration_manager.nocobase_packages 2.2.15 --node-modules APP/node_modules

The ``@nocobase/*`` packages of a release are fetched with ``npm pack`` (or read from an installed
app's ``node_modules``), their ``dist/server/collections/*.js`` files are evaluated with node
(``nocobase_collections.js``, not parsed with patterns), and ``nocobase_knowledge.build`` turns
the result into one JSON file per minor version under ``data/nocobase/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from migration_manager.errors import ConfigError
from migration_manager.nocobase_knowledge import DATA_DIR, Knowledge, build

log = logging.getLogger(__name__)

EXTRACTOR = Path(__file__).with_name("nocobase_collections.js")
# Packages besides the preset's plugins that declare collections (applicationPlugins).
CORE_PACKAGES = ("@nocobase/server",)
PRESET = "@nocobase/preset-nocobase"


def extract(package_dirs: list[Path]) -> dict[str, Any]:
    """Run the node extractor over unpacked ``@nocobase/*`` package directories."""
    node = shutil.which("node")
    if node is None:
        raise ConfigError("node is needed to read NocoBase's collection files; install Node.js 20+")
    done = subprocess.run(
        [node, str(EXTRACTOR), *map(str, package_dirs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"{EXTRACTOR.name} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- where the packages come from


def _npm(*args: str, cwd: Path | None = None) -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError("npm is needed to fetch NocoBase's packages from the npm registry")
    done = subprocess.run([npm, *args], capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode != 0:
        raise ConfigError(f"npm {' '.join(args[:3])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def registry_packages(version: str) -> list[str]:
    """The ``@nocobase/*`` packages of a release: the preset's plugins plus the server."""
    deps = json.loads(_npm("view", f"{PRESET}@{version}", "dependencies", "--json") or "{}")
    names = sorted(n for n in deps if n.startswith("@nocobase/plugin-"))
    if not names:
        raise ConfigError(f"{PRESET}@{version} lists no @nocobase/plugin-* dependencies")
    return list(CORE_PACKAGES) + names


def fetch_packages(version: str, workdir: Path) -> list[Path]:
    """``npm pack`` each package of ``version`` into ``workdir`` and unpack it; returns the dirs."""
    tarballs = workdir / "tarballs"
    tarballs.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name in registry_packages(version)]
    out = json.loads(
        _npm("pack", "--json", "--pack-destination", str(tarballs), *specs, cwd=workdir)
    )
    dirs = []
    for entry in out:
        dest = workdir / "packages" / entry["name"]
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarballs / entry["filename"]) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith("package/")
                and (m.isfile() or m.isdir())
                and "/node_modules/" not in m.name
                and not m.name.startswith("package/dist/client")
            ]
            for m in members:
                m.name = m.name[len("package/") :]
            tar.extractall(dest, members=members, filter="data")
        dirs.append(dest)
    return dirs


def node_modules_packages(node_modules: Path) -> list[Path]:
    scope = node_modules / "@nocobase"
    if not scope.is_dir():
        raise ConfigError(f"{node_modules} has no @nocobase packages")
    return sorted(p for p in scope.iterdir() if (p / "package.json").is_file())


def generate(version: str, node_modules: Path | None = None) -> Knowledge:
    if node_modules is not None:
        raw = extract(node_modules_packages(node_modules))
        source = "node_modules"
    else:
        with tempfile.TemporaryDirectory(prefix="nocobase-knowledge-") as tmp:
            raw = extract(fetch_packages(version, Path(tmp)))
        source = "npm registry"
    versions = set(raw.get("packages", {}).values())
    if versions - {version}:
        log.warning("packages of other versions than %s: %s", version, sorted(versions))
    return build(raw, version, source)


def write(knowledge: Knowledge, data_dir: Path = DATA_DIR) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"{knowledge.minor}.json"
    path.write_text(knowledge.file_text(), "utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m migration_manager.nocobase_packages",
        description="Generate the nocobase profile's table knowledge for a NocoBase version.",
    )
    parser.add_argument("version", help="NocoBase version, e.g. 2.2.15")
    parser.add_argument(
        "--node-modules",
        type=Path,
        help="read an installed app's node_modules instead of fetching packages from the registry",
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder of the JSON files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    knowledge = generate(args.version, args.node_modules)
    path = write(knowledge, args.out)
    print(
        f"{path}: NocoBase {knowledge.version}, {len(knowledge.packages)} packages, "
        f"{len(knowledge.collections)} collections, {len(knowledge.through)} through tables, "
        f"{len(knowledge.references)} references, "
        f"{len(knowledge.skipped)} skipped files"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
