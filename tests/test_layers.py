"""The layer rule (STYLE.md): kernels/ <- engine/ <- bindings/, no import circles, and no function-local
imports of our own modules. Walks every module's syntax tree, so a new upward import fails here."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"kernels": "afdps.kernels", "engine": "afdps.engine", "bindings": "afdps"}


def _modules() -> dict:
    """module name -> path, for every .py file of the three folders."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _layer(module: str) -> int:
    if module.startswith("afdps.kernels"):
        return 0
    return 1 if module.startswith("afdps.engine") else 2


def _imports(module: str, path: Path, known) -> list[tuple[str, bool]]:
    """(imported module of ours, whether the import sits inside a function) for each import."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names]
            for name in names:
                if name == "afdps" or name.startswith("afdps."):
                    while name not in known and "." in name:
                        name = name.rpartition(".")[0]
                    if name != module:
                        out.append((name, inside))
            visit(child, inside)

    visit(tree, False)
    return out


MODULES = _modules()
EDGES = {m: _imports(m, p, MODULES) for m, p in MODULES.items()}


def test_the_walk_sees_the_package():
    assert {"afdps", "afdps.engine.sampler", "afdps.kernels.particle_step", "afdps.cli.demo"} <= set(MODULES)
    assert ("afdps.kernels.particle_step", False) in EDGES["afdps.engine.sampler"]


def test_no_import_climbs_a_layer():
    upward = [(m, t) for m, edges in EDGES.items() for t, _ in edges if _layer(t) > _layer(m)]
    assert not upward, upward


def test_no_import_circle():
    graph = {m: {t for t, _ in edges if t in MODULES} for m, edges in EDGES.items()}
    # a package's __init__ re-exporting its own children is not a circle
    graph = {m: {t for t in ts if not (t.startswith(m + ".") and MODULES[m].name == "__init__.py")}
             for m, ts in graph.items()}
    state, circles = {}, []

    def dfs(v, stack):
        state[v] = 1
        stack.append(v)
        for w in graph[v]:
            if state.get(w) == 1:
                circles.append(stack[stack.index(w):] + [w])
            elif w not in state:
                dfs(w, stack)
        stack.pop()
        state[v] = 2

    for v in graph:
        if v not in state:
            dfs(v, [])
    assert not circles, circles


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_import_of_our_modules(module):
    local = [t for t, inside in EDGES[module] if inside]
    assert not local, f"{module} imports {local} inside a function"
