"""The import graph keeps the floors of docs/architecture.md, and has no cycle.

Floors, lowest first: compression, env, the learners (``autoshrink.agent``'s own modules),
the search run (``agent/search``), batch jobs (``agent/batch``), the CLI (``scripts``). A
module imports only from its own floor or lower ones, lazily or not; imports under
``if TYPE_CHECKING:`` are types only and do not count. Package ``__init__`` files are the
facades and may name what lies above them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "compression": "autoshrink.compression",
    "env": "autoshrink.env",
    "agent": "autoshrink.agent",
    "scripts": "autoshrink.scripts",
}
FLOORS = ("compression", "env", "learners", "search", "batch", "scripts")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    rest = [p for p in parts[1:] if p != "__init__"]
    return ".".join([PACKAGES[parts[0]], *rest])


def floor(module: str) -> int:
    for prefix, name in (
        ("autoshrink.agent.search", "search"),
        ("autoshrink.agent.batch", "batch"),
        ("autoshrink.agent", "learners"),
        ("autoshrink.compression", "compression"),
        ("autoshrink.env", "env"),
        ("autoshrink.scripts", "scripts"),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return FLOORS.index(name)
    raise ValueError(module)


def imported(tree: ast.Module) -> set[str]:
    """Every autoshrink module or name a module imports at run time."""
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autoshrink"):
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("autoshrink")}
    return out


def source_files() -> dict[str, Path]:
    return {module_name(f): f for top in PACKAGES for f in (ROOT / top).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    files = source_files()

    def resolve(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    return {
        m: {t for name in imported(ast.parse(f.read_text())) if (t := resolve(name)) != m}
        for m, f in files.items()
    }


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    graph, files = import_graph(), source_files()
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if floor(t) > floor(m) and files[m].name != "__init__.py"
    )
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(t) :], t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_floors_test_can_fail() -> None:
    tree = ast.parse("from autoshrink.agent.search.loop import run_search\n")
    assert "autoshrink.agent.search.loop.run_search" in imported(tree)
    assert floor("autoshrink.agent.search.loop") > floor("autoshrink.env.budget")


#: The house rules: a module holds one concept, a function one step.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def too_long(files: dict[str, Path]) -> list[str]:
    """Every module over MAX_MODULE_LINES and every function over MAX_FUNCTION_LINES."""
    out: list[str] = []
    for module, path in sorted(files.items()):
        source = path.read_text()
        if (n := len(source.splitlines())) > MAX_MODULE_LINES:
            out.append(f"{module}: {n} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{module}.{node.name}: {length} lines")
    return out


def test_modules_and_functions_keep_their_sizes() -> None:
    assert too_long(source_files()) == []


def test_the_size_test_can_fail(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "\n" * 400)
    assert too_long({"m": long}) == ["m: 461 lines", "m.f: 61 lines"]
