"""SQL text is never built from strings: every query the package executes is a constant, a
``psycopg.sql`` composition or SQLAlchemy's ``text()`` of a constant (issue 22).

A name in SQL built with an f-string, ``%`` or ``+`` would be read by psycopg as a placeholder
when parameters come with it (a column ``%s``), or worse. The check reads the package's source
(AST): the first argument of every ``execute``/``executemany``/``copy``/``exec_driver_sql``/
``run_one`` call, and of every ``sql.SQL``/``text`` call, followed through local assignments.
Composed SQL turned into text (``.as_string``) never goes with parameters, and through
SQLAlchemy's ``exec_driver_sql`` (which always hands psycopg parameters, ``{}`` at least) only
via ``pg.run_composed`` (no parameters at all): a DB_SCHEMA '%s' was read as a placeholder.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "migration_manager"
EXECUTING = {"execute", "executemany", "copy", "exec_driver_sql", "run_one"}
WRAPPING = {"SQL", "text"}


def _assignments(func: ast.AST) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(node.value)
        elif (
            isinstance(node, ast.AnnAssign | ast.AugAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            found.setdefault(node.target.id, []).append(node.value)
    return found


def _constant(expr: ast.expr, local: dict[str, list[ast.expr]], seen: set[str]) -> bool:
    """A string known when the module is read: literals, and names and sums made of them."""
    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, str)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _constant(expr.left, local, seen) and _constant(expr.right, local, seen)
    if isinstance(expr, ast.Name) and expr.id in local and expr.id not in seen:
        return all(_constant(v, local, seen | {expr.id}) for v in local[expr.id])
    return False


def _built_from_strings(expr: ast.expr, local: dict[str, list[ast.expr]], seen: set[str]) -> bool:
    """Whether ``expr`` makes SQL text out of run-time strings (f-string, %, +, str.format)."""
    if isinstance(expr, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in expr.values)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
        return not _constant(expr, local, seen)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        # str + str; psycopg's Composable + Composable (sql.Composed) is composition
        return not _constant(expr, local, seen) and any(
            isinstance(side, ast.JoinedStr)
            or _constant(side, local, seen)
            or _built_from_strings(side, local, seen)
            for side in (expr.left, expr.right)
        )
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr in ("format", "join")
        and isinstance(expr.func.value, ast.Constant)
    ):
        return isinstance(expr.func.value.value, str)
    if isinstance(expr, ast.IfExp):
        return _built_from_strings(expr.body, local, seen) or _built_from_strings(
            expr.orelse, local, seen
        )
    if isinstance(expr, ast.Name) and expr.id in local and expr.id not in seen:
        return any(_built_from_strings(v, local, seen | {expr.id}) for v in local[expr.id])
    return False


def _rendered(expr: ast.expr, local: dict[str, list[ast.expr]], seen: set[str]) -> bool:
    """Whether ``expr`` is composed SQL turned into text (``.as_string(...)``): its names are
    quoted but a '%' in them is a placeholder again for a call that brings parameters."""
    if isinstance(expr, ast.Name) and expr.id in local and expr.id not in seen:
        return any(_rendered(v, local, seen | {expr.id}) for v in local[expr.id])
    return any(
        isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "as_string"
        for n in ast.walk(expr)
    )


def _with_parameters(call: ast.Call) -> bool:
    return len(call.args) > 1 or any(k.arg in ("params", "parameters") for k in call.keywords)


# The one place composed SQL is run as text through SQLAlchemy: without any parameters.
RUNS_COMPOSED = "run_composed"


def offences(source: str, filename: str = "<string>") -> list[str]:
    tree = ast.parse(source)
    exempt = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and f.name == RUNS_COMPOSED
        for n in ast.walk(f)
    }
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            continue
        local = _assignments(func)
        for call in ast.walk(func):
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "attr", getattr(call.func, "id", ""))
            if name not in EXECUTING | WRAPPING:
                continue
            if name == "run_one" and len(call.args) > 1:
                query = call.args[1]
            elif call.args:
                query = call.args[0]
            else:
                named = [k.value for k in call.keywords if k.arg in ("query", "statement")]
                if not named:
                    continue
                query = named[0]
            bad = _built_from_strings(query, local, set())
            # SQLAlchemy passes psycopg an empty {} even with no parameters: '%' is read then
            bad |= (
                name == "exec_driver_sql"
                and not _constant(query, local, set())
                and id(call) not in exempt
            )
            bad |= name in EXECUTING and _with_parameters(call) and _rendered(query, local, set())
            if bad:
                found.append(f"{filename}:{call.lineno}: {ast.unparse(call)[:120]}")
    return sorted(set(found))


def test_the_checker_finds_sql_built_from_strings() -> None:
    planted = textwrap.dedent(
        """
        def f(cur, table, conn):
            cur.execute(f"SELECT * FROM {table} WHERE id = %s", (1,))
            query = "DELETE FROM " + table
            cur.execute(query)
            cur.execute("SELECT %s FROM t" % table)
            cur.copy("COPY {} FROM STDIN".format(table))
            cur.execute(sql.SQL(f"SELECT {table}"))
            conn.exec_driver_sql(", ".join([table]))
            pg.run_one(conn, f"DROP TABLE {table}")
            conn.exec_driver_sql(sql.SQL("SELECT {}").format(sql.Identifier(table)).as_string(c))
            text = sql.SQL("SELECT {}, %s").format(sql.Identifier(table)).as_string(c)
            cur.execute(text, (1,))
            cur.execute(query=text, params=(1,))
        """
    )
    assert len(offences(planted)) == 10
    fine = textwrap.dedent(
        """
        QUERY = "SELECT 1"
        LONG = "SELECT " + QUERY + " FROM t"
        def f(cur, table, conn):
            cur.execute(LONG)
            cur.execute("SELECT * FROM t WHERE id = %s", (1,))
            cur.execute(QUERY)
            query = sql.SQL("DELETE FROM {}").format(sql.Identifier(table))
            cur.execute(query, (1,))
            conn.execute(sa.text("SELECT :x"), {"x": 1})
            cur.execute(sql.SQL("SELECT {}").format(sql.Literal(table)))
            cur.execute(comment(table) + sql.SQL("SELECT %s"), (1,))
            pg.run_one(conn, statement)
            conn.exec_driver_sql("SHOW server_version")
            pg.run_composed(conn, sql.SQL("SELECT {}").format(sql.Identifier(table)))
            cur.execute(sql.SQL("SELECT {}").format(sql.Identifier(table)).as_string(c))
        def run_composed(conn, query):
            conn.exec_driver_sql(query.as_string(conn), execution_options={"no_parameters": True})
        """
    )
    assert offences(fine) == []


def test_the_package_executes_no_sql_built_from_strings() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += offences(path.read_text(), str(path.relative_to(PACKAGE)))
    assert found == []
