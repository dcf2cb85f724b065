"""metastack's modules import each other as a tree: no import cycle, not even one hidden
in a function body (an import inside a function still ties the two modules together).

`import_graph` and `import_cycles` read the source with `ast` (nothing is imported), so
any package can be checked: `import_cycles(import_graph(SRC, "metastack"))`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_names(src: Path, package: str) -> dict[str, Path]:
    root = src.joinpath(*package.split("."))
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load, absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` lives in: itself, or the nearest enclosing module we know."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports anywhere in its body (functions,
    `if TYPE_CHECKING:` blocks and all). `from pkg import name` counts as importing the
    submodule `pkg.name` when there is one, else `pkg`."""
    modules = _module_names(src, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = _imported(node, name, is_package)
            if isinstance(node, ast.ImportFrom):  # `from a import b`: a.b if a module, else a
                submodules = [n for n in names[1:] if n in modules]
                names = submodules + ([names[0]] if len(submodules) < len(names) - 1 else [])
            for imported in names:
                target = _owner(imported, modules)
                if target is not None and target != name:
                    graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other in a circle (strongly connected
    components with more than one module), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_metastack_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "metastack")
    assert "metastack.api.control.routes" in graph["metastack.api.control.app"]
    assert import_cycles(graph) == []


def test_control_api_modules_form_a_tree() -> None:
    graph = import_graph(SRC, "metastack.api.control")
    assert len(graph) >= 8
    assert import_cycles(graph) == []
    assert graph["metastack.api.control.context"].isdisjoint(
        {"metastack.api.control.app", "metastack.api.control.routes"}
    )


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import thing\n",
            "pkg/b.py": "def thing():\n    from . import c\n    return c\n",
            "pkg/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from .sub import d\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/d.py": "from .. import a\n",
            "pkg/e.py": "from pkg import a, b\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.sub.d"] == {"pkg.a"}
    assert graph["pkg.e"] == {"pkg.a", "pkg.b"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"]]


def test_a_tree_has_no_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import x\n",
            "pkg/a.py": "from pkg.b import y\nx = y\n",
            "pkg/b.py": "import os\ny = os.sep\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set()}
    assert import_cycles(graph) == []


def test_store_modules_form_a_tree() -> None:
    graph = import_graph(SRC, "metastack.store")
    assert len(graph) > 10, sorted(graph)
    assert "metastack.store.ports" in graph["metastack.store.routers"]
    # `from metastack.store import instances, ports, ...` names submodules.
    assert {"metastack.store.instances", "metastack.store.topology"} <= graph["metastack.store.sql"]
    # store/cli.py imports migrate inside its commands only.
    assert "metastack.store.migrate" in graph["metastack.store.cli"]
    assert import_cycles(graph) == []


def test_a_cycle_through_a_relative_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from . import c\n    return c\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert import_cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]
    (package / "c.py").write_text("")
    assert import_cycles(import_graph(tmp_path, "pkg")) == []
