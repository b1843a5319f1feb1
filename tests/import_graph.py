"""The package's import graph, read from the source with :mod:`ast` (nothing is imported).

An import is *module-level* when it runs on import of its module: at the top of the file or inside a top-level
``if``/``try``/``with``/class body. Imports inside a function body run only when the function is called
(*function-level*), and imports under ``if TYPE_CHECKING:`` never run; they are left out of the module-level
graph. A cycle of module-level imports is a bug (which module finishes first depends on who imports first, and
names go missing half-way); a cycle that needs a function-level edge works but still means two modules lean on
each other, so it is reported separately.

Used by ``tests/test_layout.py``; kept beside it (not in the package) because it is a test tool.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name: a module of the package, or a third-party/stdlib name
    module_level: bool
    optional: bool  # inside a ``try`` whose handler catches ImportError / ModuleNotFoundError
    line: int
    name: str | None = None  # ``from target import name`` where name is not a module of the package


@dataclass
class Graph:
    package: str
    files: dict[str, Path] = field(default_factory=dict)  # module name -> file
    imports: dict[str, list[Import]] = field(default_factory=dict)  # module name -> its imports

    def edges(self, *, module_level_only: bool) -> dict[str, set[str]]:
        """Edges between the package's own modules."""
        return {
            mod: {
                i.target
                for i in imports
                if i.target in self.files and i.target != mod and (i.module_level or not module_level_only)
            }
            for mod, imports in self.imports.items()
        }


def module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def build_graph(root: str | Path, package: str | None = None) -> Graph:
    """The import graph of the package whose ``__init__.py`` is in ``root``."""
    root = Path(root)
    package = package or root.name
    graph = Graph(package)
    for path in sorted(root.rglob("*.py")):
        graph.files[module_name(root, path, package)] = path
    for mod, path in graph.files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph.imports[mod] = list(_imports(tree, mod, is_package, graph.files))
    return graph


def _resolve_from(node: ast.ImportFrom, mod: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for name in names:
            if name is None or (
                isinstance(name, ast.Name) and name.id in ("ImportError", "ModuleNotFoundError")
            ):
                return True
    return False


_TRY = (ast.Try, getattr(ast, "TryStar", ast.Try))  # try/except* from Python 3.11


def _imports(tree: ast.Module, mod: str, is_package: bool, known: dict[str, Path]) -> Iterable[Import]:
    def visit(node: ast.AST, module_level: bool, optional: bool) -> Iterable[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, module_level, optional, node.lineno)
            return
        if isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, mod, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield Import(sub, module_level, optional, node.lineno)
                else:
                    yield Import(base, module_level, optional, node.lineno, alias.name)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from visit(child, module_level, optional)
            return
        if isinstance(node, _TRY):
            guarded = optional or _catches_import_error(node)
            for child in node.body:
                yield from visit(child, module_level, guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                yield from visit(child, module_level, optional)
            return
        inner = module_level and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inner, optional)

    for statement in tree.body:
        yield from visit(statement, True, False)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, sorted by first name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def module_level_closure(graph: Graph, start: Iterable[str]) -> set[str]:
    """Every module of the package that importing ``start`` runs (module-level edges, transitively)."""
    edges = graph.edges(module_level_only=True)
    seen: set[str] = set()
    todo = [m for m in start if m in graph.files]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo.extend(edges.get(mod, ()))
        parent = mod.rpartition(".")[0]  # importing a.b.c runs a/__init__ and a/b/__init__ first
        if parent in graph.files:
            todo.append(parent)
    return seen
