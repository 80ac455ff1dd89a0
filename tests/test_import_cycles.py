"""No import cycles among the project's modules, counting imports made inside functions (issue 16).

A cycle hidden in a function (``cli`` and ``workers`` importing each other, hooks importing the
relay when first called) still ties the modules together; this keeps them apart. Imports under
``if TYPE_CHECKING:`` are for the type checker only and do not count.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> Dict[str, Path]:
    mods = {}
    for base in ("proxy", "framecodec"):
        for path in (ROOT / base).rglob("*.py"):
            mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[mod[:-9] if mod.endswith(".__init__") else mod] = path
    return mods


def _imports(mod: str, path: Path, mods: Dict[str, Path]) -> Set[str]:
    """The project modules ``mod`` imports, wherever in the file (TYPE_CHECKING blocks aside)."""
    is_pkg = path.name == "__init__.py"
    found: Set[str] = set()

    def visit(nodes: List[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = mod.split(".")[:None if is_pkg else -1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    found.add(t)
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit(sub)

    visit(ast.parse(path.read_text()).body)
    return found


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    assert graph["proxy.workers"] and "proxy.core.relay" in graph["proxy.server"]     # (the scan sees imports)
    assert _cycles(graph) == []


def test_the_scan_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
