"""The import graph of the ``lmforge.*`` modules, read with ``ast`` (nothing is imported).

An edge ``a -> b`` means executing module ``a`` can execute module ``b``: an ``import``/``from ...
import`` anywhere in ``a`` (function bodies included, relative imports resolved, ``from pkg import
name`` followed to ``pkg.name`` when that is a module; ``if TYPE_CHECKING:`` bodies skipped), a
string literal naming a module (``"lmforge.x.y"`` or the class path ``"lmforge.x.y.Class"``), or an
f-string/concatenation with a constant prefix (``f"lmforge.training.{kind}"``), which names every
*runnable* module of that package whose name fits (a ``python -m`` target: it has an
``if __name__ == "__main__":`` block). ``ModuleGraph.reach`` follows the edges and adds the parent
packages whose ``__init__.py`` an import executes.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "lmforge"
_MODULE_STRING = re.compile(rf"{PACKAGE}(\.[A-Za-z_]\w*)+")


class ModuleGraph:
    """The ``lmforge.*`` modules under ``src`` and the edges between them.

    Files are read once per graph: build a new graph after editing the code."""

    def __init__(self, src: Path):
        self.src = src
        self._files: dict[str, Path | None] = {}
        self._trees: dict[Path, ast.Module] = {}
        self._edges: dict[str, frozenset[str]] = {}

    def file(self, name: str) -> Path | None:
        """The file that importing ``name`` executes (``a/b.py`` or ``a/b/__init__.py``), or None."""
        if name not in self._files:
            base = self.src.joinpath(*name.split("."))
            if (base / "__init__.py").is_file():
                self._files[name] = base / "__init__.py"
            elif base.with_suffix(".py").is_file():
                self._files[name] = base.with_suffix(".py")
            else:
                self._files[name] = None
        return self._files[name]

    def is_package(self, name: str) -> bool:
        path = self.file(name)
        return path is not None and path.name == "__init__.py"

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_bytes(), filename=str(path))
        return self._trees[path]

    def runnable(self, package: str) -> list[str]:
        """The modules directly in ``package`` that ``python -m`` can run (they have a ``__main__`` block)."""
        folder = self.src.joinpath(*package.split("."))
        return [f"{package}.{path.stem}" for path in sorted(folder.glob("*.py"))
                if path.stem != "__init__" and _has_main_block(self.tree(path))]

    def edges(self, name: str) -> frozenset[str]:
        """The ``lmforge.*`` modules that executing module ``name`` can import or launch."""
        if name not in self._edges:
            self._edges[name] = self._find_edges(name)
        return self._edges[name]

    def _find_edges(self, name: str) -> frozenset[str]:
        path = self.file(name)
        if path is None:
            return frozenset()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in _executed_nodes(self.tree(path)):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, package)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if self.file(f"{base}.{alias.name}"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update(self.named_module(node.value))
            elif (prefix := _constant_prefix(node)) is not None:
                found.update(self._launched_modules(prefix))
        return frozenset(m for m in found if (m == PACKAGE or m.startswith(PACKAGE + ".")) and self.file(m))

    def named_module(self, text: str) -> list[str]:
        """``"lmforge.x.y"`` or ``"lmforge.x.y.Class"`` naming a (non-package) module: a launch or a class path.

        Packages are left out: ``"lmforge.training"`` in this code is a logger name or an MLflow tag."""
        if not _MODULE_STRING.fullmatch(text):
            return []
        for candidate in (text, text.rpartition(".")[0]):
            if self.file(candidate) and not self.is_package(candidate):
                return [candidate]
        return []

    def _launched_modules(self, prefix: str) -> list[str]:
        """Runnable modules an f-string such as ``f"lmforge.training.{kind}"`` can name."""
        if not prefix.startswith(PACKAGE + "."):
            return []
        package, _, start = prefix.rpartition(".")
        if not self.is_package(package):
            return []
        return [m for m in self.runnable(package) if m.rpartition(".")[2].startswith(start)]

    def reach(self, roots: list[str]) -> dict[str, str | None]:
        """Every module executing ``roots`` can execute, mapped to the module that first reached it."""
        parent: dict[str, str | None] = {}
        queue: deque[tuple[str, str | None]] = deque((root, None) for root in roots)
        while queue:
            name, importer = queue.popleft()
            if name in parent or self.file(name) is None:
                continue
            parent[name] = importer
            parts = name.split(".")
            # importing a.b.c first executes a/__init__.py and a/b/__init__.py
            queue.extend((".".join(parts[:i]), name) for i in range(1, len(parts)))
            queue.extend((edge, name) for edge in sorted(self.edges(name)))
        return parent

    def chain(self, parent: dict[str, str | None], name: str) -> list[str]:
        """The import chain from a root to ``name`` in the result of ``reach``."""
        out: list[str] = []
        step: str | None = name
        while step is not None:
            out.append(step)
            step = parent[step]
        return out[::-1]


def _has_main_block(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [node.test.left, *node.test.comparators]
            if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names) and any(
                    isinstance(n, ast.Constant) and n.value == "__main__" for n in names):
                return True
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _executed_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (which never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of ``from <node.module> import ...`` inside ``package``."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _constant_prefix(node: ast.AST) -> str | None:
    """The constant start of ``f"lmforge.training.{kind}"`` or ``"lmforge.training." + kind``, else None."""
    if isinstance(node, ast.JoinedStr) and len(node.values) > 1:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = node.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str):
            return left.value
    return None
