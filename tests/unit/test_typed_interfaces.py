"""Data inside the package is typed: JSON-as-dict annotations only where JSON crosses a boundary.

An annotation ``dict[str, Any]`` / ``Mapping[str, Any]`` / ``Json`` / ``JsonObject`` says "some
JSON": right where a document is parsed or written (a file, an XCom value, an HTTP body, a DAG
run's conf), wrong between two of the package's own functions, which should pass the typed
model. The boundaries are listed below with why; every other such annotation is internal, and
there may be at most ``MAX_INTERNAL`` of them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "include"
UNTYPED = re.compile(
    r"\b(?:dict|Mapping|MutableMapping)\[str, Any\]|\bJson\b|\bJsonObject\b|\bFingerprintJson\b"
)
# Issue 21 asks for at most 15; this is where the tree stands, so it may only go down.
MAX_INTERNAL = 12

# "module" (all of it) or "module:qualname" -> why JSON is the right type there
BOUNDARY: dict[str, str] = {
    "migration_manager.airflow_api": "Airflow's REST API: request and response bodies",
    "migration_manager.app_control": "NocoBase's HTTP API: request and response bodies",
    "migration_manager.nocobase_packages": "the node extractor's output, before build() types it",
    "migration_manager.nocobase_knowledge:build": "the node extractor's output",
    "migration_manager.nocobase_knowledge:references_of": "one record of the node extractor",
    "migration_manager.airflow.params": "the JSON Schema of Airflow's Params",
    "migration_manager.airflow.xcom_models": "what crosses XCom, parsed and written",
    "migration_manager.ui.rules_page": "the rules page's FastAPI JSON endpoints",
    "migration_manager.ui.rule_config": "the rules page's request bodies and JSON answers",
    "migration_manager.run_options:RunOptions.of_params": "a DAG run's params, as Airflow has them",
    "migration_manager.run_options:RunOptions.as_params": "a DAG run's conf, as Airflow takes it",
    "migration_manager.signing:trusted_keys": "the Variable migration_trusted_keys (JSON)",
    "migration_manager.config:app_env_from_extra": "a connection's extra (JSON)",
    "migration_manager.profiles:_json": "a NocoBase options column (JSON text or jsonb)",
    "migration_manager.create:create_migration": "the engine's entry point: rules as a document",
    "migration_manager.preview:preview": "the engine's entry point: rules as a document",
    "migration_manager.preview:inspect_source": "the engine's entry point: rules as a document",
    "migration_manager.airflow.common:unanswered": "a human-in-the-loop answer (Airflow's event)",
    "migration_manager.airflow.common:responder": "a human-in-the-loop answer (Airflow's event)",
    "migration_manager.airflow.check_operators:_supplied": "the env_values param, as given",
    "migration_manager.airflow.check_operators:EnvValuesOperator._finish": "the task's XCom value",
    "migration_manager.airflow.check_operators:PluginCheckOperator._done": "the task's XCom value",
    "migration_manager.airflow.operators:ApplyUnitOperator.__init__": "the mapped XCom value",
    "migration_manager.airflow.wiring:collect_logs": "the task's XCom value",
    "migration_manager.ui.files:_trigger": "a DAG run's conf (Airflow's REST API)",
    "migration_manager.ui.files:_trigger_file": "a DAG run's conf (Airflow's REST API)",
    "migration_manager.ui.rule_runs": "Airflow's REST API (conf, task instances) and the rules page's run answers",
    "migration_manager.check_outcomes:EnvCheck._kept": "a step's XCom value, as its model reads it",
    "migration_manager.step_outcomes:PlanOutcome._kept": "a step's XCom value, as its model reads it",
    "migration_manager.step_kinds:items": "a step's XCom value, as its model reads it",
    "migration_manager.run_record:RunRecord": "the run's params as given (free-form JSON)",
    "migration_manager.checks:parse_supplied": "the env_values param (name -> value or reference)",
    "migration_manager.checks:resolve_values": "the env_values param (name -> value or reference)",
    "migration_manager.demo": "the DAG run conf and run state of Airflow's REST API",
    "migration_manager.airflow.wiring:<module>": "Airflow's default_args (operator keywords)",
}
# an operator's execute/execute_complete returns its XCom value and gets HITL events
OPERATOR_METHODS = ("execute", "execute_complete")


def untyped_annotations() -> list[tuple[str, str, str]]:
    """(module, qualified name of the function/class, annotation) of every JSON-as-dict one."""
    found: list[tuple[str, str, str]] = []
    for path in sorted((ROOT / "migration_manager").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        _visit(ast.parse(path.read_text()), module, "", found)
    return found


def _visit(node: ast.AST, module: str, scope: str, found: list[tuple[str, str, str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{scope}.{child.name}" if scope else child.name
            args = child.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            notes = [a.annotation for a in every if a is not None and a.annotation is not None]
            notes += [child.returns] if child.returns is not None else []
            found += [
                (module, name, ast.unparse(n)) for n in notes if UNTYPED.search(ast.unparse(n))
            ]
            _visit(child, module, name, found)
        elif isinstance(child, ast.ClassDef):
            _visit(child, module, f"{scope}.{child.name}" if scope else child.name, found)
        elif isinstance(child, ast.AnnAssign) and UNTYPED.search(ast.unparse(child.annotation)):
            found.append((module, scope or "<module>", ast.unparse(child.annotation)))
        else:
            _visit(child, module, scope, found)


def _boundary(module: str, name: str) -> str | None:
    if module.startswith("migration_manager.airflow.") and name.endswith(
        tuple(f".{m}" for m in OPERATOR_METHODS)
    ):
        return "operator method"
    for key in (f"{module}:{name}", f"{module}:{name.split('.')[0]}", module):
        if key in BOUNDARY:
            return key
    return None


def test_the_counter_finds_json_annotations() -> None:
    tree = ast.parse("def f(a: dict[str, Any], b: Mapping[str, Any]) -> Json:\n    x: int = 1\n")
    found: list[tuple[str, str, str]] = []
    _visit(tree, "m", "", found)
    assert [n for *_, n in found] == ["dict[str, Any]", "Mapping[str, Any]", "Json"]


def test_internal_interfaces_are_typed() -> None:
    internal = [f"{m}:{n}  {a}" for m, n, a in untyped_annotations() if _boundary(m, n) is None]
    assert len(internal) <= MAX_INTERNAL, "\n".join(internal)


def test_every_listed_boundary_still_exists() -> None:
    used = {_boundary(m, n) for m, n, _ in untyped_annotations()}
    assert sorted(set(BOUNDARY) - used) == []


def test_the_ratchet_is_tight() -> None:
    """MAX_INTERNAL follows the count down: lower it when an annotation is typed."""
    internal = [a for m, n, a in untyped_annotations() if _boundary(m, n) is None]
    assert len(internal) == MAX_INTERNAL
