"""No package-level import cycle in ``llm_gym`` and ``agents``: each package imports alone, and the import graph
between packages (lazy imports inside functions included) has no cycle.

A package-level cycle is ``A/__init__ -> ... -> B -> ... -> A``: it works only while some import on it stays
lazy or happens to run in the right order, and it makes the two packages one unit. The graph is built with
``ast`` from every ``import`` in the source (``if TYPE_CHECKING:`` blocks excepted). Its nodes are the
sub-packages (``llm_gym.envs``, ``agents.common``, ...; a nested sub-package belongs to its top-level one),
each plain module at a package's top (``llm_gym.lm``, ``agents.grpo``) and each top package's ``__init__``
(``llm_gym``, ``agents``, the public API that imports the rest).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llm_gym", "agents")


def source_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the packages (``pkg/__init__.py`` is ``pkg``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every ``Import`` / ``ImportFrom`` node, at any depth, outside ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        children = list(ast.iter_child_nodes(node))
        if _type_checking_only(node):
            children = [c for c in children if c not in node.body]
        stack.extend(children)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for candidate in candidates:
            while candidate and candidate not in known:  # ``import a.b.c`` of a package-level name: its module
                candidate = candidate.rpartition(".")[0]
            if candidate:
                targets.add(candidate)
    return targets


def unit(module: str) -> str:
    """The node of the package graph a module belongs to: its top package's ``__init__``, a top-level module,
    or a top-level sub-package (``llm_gym.envs.multiturn.tools`` -> ``llm_gym.envs``)."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, dict[str, tuple[str, str]]]:
    """``{unit: {imported unit: (an importing module, the module it imports)}}``, without self-edges."""
    modules = source_modules()
    graph: dict[str, dict[str, tuple[str, str]]] = {unit(m): {} for m in modules}
    for name, path in modules.items():
        for target in sorted(imported_modules(name, path, set(modules))):
            if unit(target) != unit(name):
                graph[unit(name)].setdefault(unit(target), (name, target))
    return graph


def find_cycle(graph: dict[str, dict[str, tuple[str, str]]]) -> list[str] | None:
    """One cycle of ``graph`` as its nodes ``[a, b, ..., a]``, or None when it is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_through_a_lazy_import(tmp_path):
    """The checker itself: a cycle closed by an import inside a function is found, a chain is not."""
    chain = {"a": {"b": ("a", "b")}, "b": {"c": ("b", "c")}, "c": {}}
    assert find_cycle(chain) is None
    assert find_cycle({**chain, "c": {"a": ("c.f", "a")}}) == ["a", "b", "c", "a"]
    lazy = tmp_path / "m.py"
    lazy.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.typing_only\n"
                    "def f():\n    from x.y import z\n    from . import w\n")
    assert imported_modules("x.m", lazy, {"x", "x.y", "x.w", "x.typing_only"}) == {"x.y", "x.w"}


def test_no_package_level_import_cycle():
    graph = package_graph()
    assert {"llm_gym", "llm_gym.envs", "llm_gym.wrappers", "agents", "agents.common"} <= set(graph)
    cycle = find_cycle(graph)
    if cycle is not None:
        hops = [f"{a} -> {b} ({' imports '.join(graph[a][b])})" for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("package-level import cycle:\n  " + "\n  ".join(hops))


def entry_points() -> list[str]:
    """Every package of llm_gym and agents, plus the engine's module ``agents.common.base``."""
    packages = [name for name, path in source_modules().items() if path.name == "__init__.py"]
    return sorted({*packages, "agents.common.base"})


def _import_alone(name: str) -> str | None:
    """Import ``name`` in a fresh interpreter: None if it worked, else the last line of the error."""
    job = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    if job.returncode == 0:
        return None
    return job.stderr.strip().splitlines()[-1] if job.stderr.strip() else f"exit code {job.returncode}"


def test_each_package_imports_alone_in_a_fresh_interpreter():
    """``python -c "import X"`` for every package, two at a time: none needs another imported first."""
    names = entry_points()
    assert {"llm_gym", "llm_gym.envs", "llm_gym.wrappers", "llm_gym.rewards", "agents"} <= set(names)
    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = dict(zip(names, pool.map(_import_alone, names), strict=True))
    failed = {name: err for name, err in errors.items() if err is not None}
    assert not failed, "\n".join(f"import {name}: {err}" for name, err in failed.items())
