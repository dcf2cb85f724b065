"""The store's modules import one another as a tree: no cycle, not even through imports
inside functions (which hide a cycle from the interpreter but not from a reader)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import metastack

SRC = Path(metastack.__file__).resolve().parent.parent
STORE = "metastack.store"


def _module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(src: Path, package: str) -> dict[str, Path]:
    root = src.joinpath(*package.split("."))
    return {_module_name(src, path): path for path in sorted(root.rglob("*.py"))}


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every module of `known` that `module` imports, at any depth of its syntax tree."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop]
                base = ".".join([*anchor, base] if base else anchor)
            yield from _resolve(base, known)
            for alias in node.names:
                yield from _resolve(f"{base}.{alias.name}", known)


def _resolve(name: str, known: set[str]) -> Iterator[str]:
    if name in known:
        yield name


def _graph(package: str, src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports."""
    modules = _modules(src, package)
    known = set(modules)
    return {
        name: {target for target in _imported(name, path, known) if target != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = _graph(STORE)
    assert "metastack.store.ports" in graph["metastack.store.routers"]
    # `from metastack.store import instances, ports, ...` names submodules.
    assert {"metastack.store.instances", "metastack.store.topology"} <= graph["metastack.store.sql"]
    # store/cli.py imports migrate inside its commands only.
    assert "metastack.store.migrate" in graph["metastack.store.cli"]


def test_a_cycle_hidden_in_a_function_or_a_relative_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from . import c\n    return c\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\n")
    graph = _graph("pkg", tmp_path)
    assert graph["pkg.b"] == {"pkg", "pkg.c"}
    assert graph["pkg.d"] == {"pkg", "pkg.a"}
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (package / "c.py").write_text("")
    assert _cycles(_graph("pkg", tmp_path)) == []


def test_store_modules_import_one_another_without_a_cycle() -> None:
    graph = _graph(STORE)
    assert len(graph) > 10, sorted(graph)
    assert _cycles(graph) == []
