"""Architecture rules of src/lmforge, checked over the source text (no imports run):

- no import circle between lmforge modules, counting every import statement, also the ones inside
  functions (a lazy import still makes the two modules depend on each other);
- no module over MAX_LINES lines unless its docstring says why (a line starting with "Long because");
- only the Kedro-aware modules (pipelines/, hooks.py, error_hooks.py, settings.py, pipeline_registry.py) import kedro.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lmforge"
MAX_LINES = 400
# The Kedro-aware modules: the pipelines, the project hooks/settings/registry and `python -m lmforge` (Kedro's CLI).
KEDRO_AWARE = ("lmforge.pipelines", "lmforge.hooks", "lmforge.error_hooks", "lmforge.settings",
               "lmforge.pipeline_registry", "lmforge.__main__")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """lmforge modules imported anywhere in the module (``from a import b`` counts a.b when b is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name and target.startswith(PACKAGE + ".") and target != PACKAGE:
            resolved.add(target)
    return resolved


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_package_init(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_no_import_circle_between_modules():
    # A package's __init__ re-exporting its submodules is not a circle of the code: leave __init__ out.
    graph = {name: {t for t in _imports(name, path) if not _is_package_init(t)}
             for name, path in MODULES.items() if not _is_package_init(name)}

    assert _cycles(graph) == []


def test_cycle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_long_modules_say_why(name):
    path = MODULES[name]
    text = path.read_text(encoding="utf-8")
    n_lines = text.count("\n")
    if n_lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "Long because" in docstring, (f"{path.relative_to(SRC.parent)} has {n_lines} lines (> {MAX_LINES}): split "
                                         "it along its seams or say why in its docstring ('Long because ...')")


def test_only_kedro_aware_modules_import_kedro():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith(KEDRO_AWARE):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{name}: {m}" for m in mods if m == "kedro" or m.startswith(("kedro.", "kedro_"))]
    assert offenders == []
