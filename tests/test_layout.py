"""The package's shape: no import cycles, a light config layer, the public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import synthgen

PACKAGE = Path(synthgen.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, known: set[str]) -> set[str]:
    """synthgen modules imported anywhere in ``tree`` (function-local imports included),
    except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative import
                base = ".".join(module.split(".")[: -node.level] + [node.module])
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            names = []
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, known) - {"synthgen"}
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_synthgen_modules():
    graph = import_graph()
    assert "synthgen.generation" in graph and "synthgen.engines.transformers" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("module", ["synthgen", "synthgen.recipe", "synthgen.generation", "synthgen.engines",
                                    "synthgen.training.tasks", "synthgen.training.audit"])
def test_light_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'synthgen.store' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False", f"importing {module} imports torch"
    if module == "synthgen.recipe":
        assert out[1] == "False", "loading a recipe must not import the model store"


def test_public_api():
    from synthgen.engines import create_engine
    from synthgen.generation import generate
    from synthgen.recipe import load_recipe

    assert synthgen.load_recipe is load_recipe and synthgen.generate is generate
    assert synthgen.create_engine is create_engine
    assert callable(synthgen.train) and callable(synthgen.audit)
    with pytest.raises(AttributeError):
        synthgen.no_such_name  # noqa: B018
