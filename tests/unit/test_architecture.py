"""The package's shape: engine without Airflow, no import cycles, no private names across
modules, modules of one concern (500 lines at most, engine and adapters alike).

Read from the source with ``ast`` (imports inside functions count: a lazy import still
couples two modules)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "include"
PACKAGE = ROOT / "migration_manager"
MAX_LINES = 500
# the Airflow side: operators and hooks, and the pages the Airflow plugin serves
ADAPTERS = ("migration_manager.airflow", "migration_manager.ui")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import in ``path``, relative ones resolved."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            out.extend((base, alias.name) for alias in node.names)
    return out


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for base, imported in _imports(name, path):
            target = f"{base}.{imported}" if f"{base}.{imported}" in MODULES else base
            if target in MODULES and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_the_checker_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_edges()) == []


def test_no_private_names_imported_across_modules() -> None:
    crossing = [
        f"{name} imports {base}.{imported}"
        for name, path in MODULES.items()
        for base, imported in _imports(name, path)
        if base in MODULES
        and base != name
        and imported is not None
        and imported.startswith("_")
        and not imported.startswith("__")
    ]
    assert crossing == []


ENGINE = {n: p for n, p in MODULES.items() if not n.startswith(ADAPTERS)}


def _private_uses(name: str, path: Path) -> list[str]:
    """``module._name`` where ``module`` is another of the package's modules, bound by an import."""
    tree = ast.parse(path.read_text(), str(path))
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for base, imported in _imports(name, path):
                if f"{base}.{imported}" in MODULES:
                    for alias in node.names:
                        if alias.name == imported:
                            bound[alias.asname or imported] = f"{base}.{imported}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    bound[alias.asname] = alias.name
    return [
        f"{name} uses {bound[node.value.id]}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in bound
        and bound[node.value.id] != name
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_no_private_names_used_across_modules() -> None:
    assert [use for name, path in MODULES.items() for use in _private_uses(name, path)] == []


def test_the_engine_does_not_import_airflow() -> None:
    engine = ENGINE
    assert "migration_manager.plan" in engine and "migration_manager.airflow.wiring" not in engine
    importing = sorted(
        name
        for name, path in engine.items()
        for base, _ in _imports(name, path)
        if base == "airflow" or base.startswith("airflow.")
    )
    assert importing == []


def test_modules_stay_small() -> None:
    """Every module of the package, the Airflow and UI adapters included, and the DAG files."""
    paths = [
        *MODULES.values(),
        *(ROOT.parent / "dags").glob("*.py"),
        *(ROOT.parent / "plugins").rglob("*.py"),
    ]
    sizes = {str(p.relative_to(ROOT.parent)): len(p.read_text().splitlines()) for p in paths}
    large = {n: lines for n, lines in sizes.items() if lines > MAX_LINES}
    assert large == {}


def _concern_table() -> str:
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    start = doc.index("## Where each concern lives")
    end = doc.find("\n## ", start + 3)
    return doc[start : end if end != -1 else len(doc)]


def test_the_architecture_doc_names_every_module_where_it_lives() -> None:
    """docs/architecture.md's "Where each concern lives" table matches the tree, both ways."""
    table = _concern_table()
    unnamed = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and f"`{path.name}`" not in table
    )
    assert unnamed == []
    tree = {path.name for path in PACKAGE.rglob("*.py")}
    package_rows = "\n".join(r for r in table.splitlines() if r.startswith("| &nbsp;"))
    named = set(re.findall(r"`([a-z_]+\.py)`", package_rows))
    assert sorted(named - tree) == []


MAX_FLOORS = 17  # the longest chain of imports, DAG file to schema/sqltext (was 26)


def _floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 1 + the highest floor among the modules it imports."""
    floors: dict[str, int] = {}

    def floor(name: str) -> int:
        if name not in floors:
            floors[name] = 1 + max((floor(o) for o in edges[name]), default=0)
        return floors[name]

    for name in edges:
        floor(name)
    return floors


def test_the_checker_counts_floors() -> None:
    assert _floors({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == {
        "a": 3,
        "b": 2,
        "c": 1,
        "d": 2,
    }


def test_the_import_tower_stays_low() -> None:
    """A link that carries only a constant or a formatter should not add a floor."""
    floors = _floors(_edges())
    assert max(floors.values()) <= MAX_FLOORS, sorted(floors.items(), key=lambda kv: -kv[1])[:3]
