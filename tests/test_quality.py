"""The code stays lint-clean (ruff) and type-checked (mypy on src/)."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_ruff() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    # mypy's cache in the user's cache folder, shared by every clone on the machine: checking from scratch (the
    # typeshed and the libraries' stubs) costs 10 s of CPU, a tenth of the suite's budget, at each fresh clone.
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "newsletter" / "mypy"
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@functools.cache
def _modules() -> dict[str, ast.Module]:
    """Every module of the package, parsed once for all the tests below."""
    src = REPO / "src" / "newsletter"
    return {f.stem: ast.parse(f.read_text(encoding="utf-8")) for f in sorted(src.glob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (at any depth, except under `if TYPE_CHECKING:`)."""
    def imports(node: ast.AST) -> set[str]:
        deps: set[str] = set()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                deps.update([child.module.split(".")[0]] if child.module else [a.name for a in child.names])
            deps |= imports(child)
        return deps

    return {name: imports(tree) for name, tree in _modules().items()}


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node):], node]))
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            walk(dep, [*path, node])
        done.add(node)

    for module in graph:
        walk(module, [])
    assert not graph["recipients"] - {"__future__"}  # the address rule depends on nothing: everyone may use it


def test_no_function_is_over_60_lines() -> None:
    long = [f"{name}.py:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, tree in _modules().items() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
            and node.end_lineno - node.lineno + 1 > 60]
    assert long == []
