"""No module of the package imports itself back through others (issue 22 item 5).

Module-level imports count, those under ``if TYPE_CHECKING:`` too (a circle a type checker
follows is still one for a reader). An import inside a function is late, not absent: the two
modules still need each other, so a second check counts those too (a late import may defer a
cost, never close a circle). Start-up's modules are also imported each alone in a fresh
interpreter: a circle that only bites in one import order shows there.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "backfill"
# Circles closed only by an import inside a function. Known, to be emptied, never grown:
# cli registers the gateway command from cli_gateway, which takes cli's exit helpers late.
KNOWN_LATE: set[frozenset[str]] = set()
STARTUP = [
    "backfill.run.launch",
    "backfill.run.startup",
    "backfill.run.gateway_edges",
    "backfill.run.request",
    "backfill.ib.preflight",
    "backfill.ib.edges",
    "backfill.lake.heads",
    "backfill.lake.gateway",
    "backfill.findings",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package modules ``tree`` imports at module level (``if`` blocks included)."""
    found: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If):
            body += node.body + node.orelse
        elif isinstance(node, ast.Try):
            body += node.body + node.orelse + node.finalbody
            body += [n for h in node.handlers for n in h.body]
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from backfill.run import events`: a submodule imported by name (the
            # package's __init__ runs too, but a submodule-only import adds no edge to it).
            named = {f"{node.module}.{a.name}" for a in node.names}
            found |= named & modules
            if node.module in modules and named - modules:
                found.add(node.module)
    return found


def every_import(tree: ast.Module, modules: set[str]) -> set[str]:
    """The package modules ``tree`` imports anywhere, inside functions too."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= top_level_imports(ast.Module([node], []), modules)
    return found


def import_graph(late: bool = False) -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    imports = every_import if late else top_level_imports
    return {
        name: imports(ast.parse(path.read_text()), modules) - {name} for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.add(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_back() -> None:
    found = cycles(import_graph())
    assert found == set(), sorted(sorted(c) for c in found)


def test_no_late_import_closes_a_circle() -> None:
    found = cycles(import_graph(late=True))
    assert found - KNOWN_LATE == set(), sorted(sorted(c) for c in found - KNOWN_LATE)


def test_the_cycle_finder_sees_a_late_import() -> None:
    source = "def f() -> None:\n    from backfill.lake.verify import Finding\n"
    tree = ast.parse(source)
    modules = {"backfill.lake.verify"}
    assert top_level_imports(tree, modules) == set()
    assert every_import(tree, modules) == {"backfill.lake.verify"}


def test_the_cycle_finder_sees_a_type_checking_circle() -> None:
    graph = import_graph()
    graph["backfill.run.request"] = graph["backfill.run.request"] | {"backfill.run.launch"}
    assert any("backfill.run.launch" in c for c in cycles(graph))


@pytest.mark.parametrize("module", STARTUP)
def test_each_start_up_module_imports_alone(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
