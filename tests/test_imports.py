"""The package's module graph: every module imports alone, the intra-package imports form a DAG, and the
public surface is corral.__all__ (every other module private). A new import cycle fails here."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import corral

SOURCE = pathlib.Path(__file__).resolve().parent.parent / "src" / "corral"
PACKAGE = "corral"
EXTENSIONS = ("_core",)  # compiled modules (bindings/): no source to parse, but importable alone


def _module_name(path: pathlib.Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


SOURCES = {_module_name(p): p for p in sorted(SOURCE.glob("*.py"))}
MODULES = sorted(SOURCES) + [f"{PACKAGE}.{name}" for name in EXTENSIONS]


def _imports(name: str, path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, whether the import is inside a function) for every import
    statement of the package's own modules in `path`, wherever it is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_of = PACKAGE  # every module here is directly in the package
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        found.append((alias.name, child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package_of if child.level == 1 else None
                    assert base is not None, f"{path}:{child.lineno}: import above the package"
                    target = f"{base}.{child.module}" if child.module else base
                elif child.module == PACKAGE or (child.module or "").startswith(PACKAGE + "."):
                    target = child.module
                else:
                    continue
                if target == PACKAGE:  # from . import X: the submodule X, or a name of the package itself
                    for alias in child.names:
                        sub = f"{PACKAGE}.{alias.name}"
                        found.append((sub if sub in MODULES else PACKAGE, child.lineno, in_function))
                else:
                    found.append((target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return [(target, line, inner) for target, line, inner in found if target != name]


def _deferred(name: str, path: pathlib.Path) -> tuple[str, ...]:
    """The package's modules that `name` imports by name when first needed (importlib.import_module, to keep
    its own import cheap: docs/architecture.md, "Start-up"): its DEFERRED_IMPORTS. A module that calls
    import_module and spells another module of the package in a string must declare it there."""
    if "import_module(" not in path.read_text():
        return ()
    named = sorted({node.value for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
                    if isinstance(node, ast.Constant) and node.value in MODULES and node.value not in (name, PACKAGE)})
    if not named:
        return ()
    proc = subprocess.run([sys.executable, "-c", f"import {name}; print(*getattr({name}, 'DEFERRED_IMPORTS', ()))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    declared = tuple(proc.stdout.split())
    assert set(named) <= set(declared), f"{path} names {named} but declares DEFERRED_IMPORTS = {declared}"
    return declared


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, path in SOURCES.items():
        for target in [t for t, _line, _inner in _imports(name, path)] + list(_deferred(name, path)):
            assert target in graph, f"{path}: imports {target}, which is not a module of the package"
            graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_source_tree_has_the_modules_the_suite_knows():
    assert SOURCES, f"no modules found under {SOURCE}"
    assert {"corral", "corral.__main__", "corral._compat"} <= set(SOURCES)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"import {module} failed alone:\n{proc.stderr}"


def test_the_module_graph_has_no_cycle():
    # Function-level imports count too: a cycle hidden inside a function is still a cycle.
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_imports_itself_only_at_module_level():
    # The graph is what the module headers say: no intra-package import inside a function (an import kept
    # inside a function for its cost, such as joblib's, is of another package).
    inner = [f"{SOURCES[name].name}:{line} imports {target}"
             for name in SOURCES for target, line, in_function in _imports(name, SOURCES[name]) if in_function]
    assert not inner, "imports of the package inside functions:\n" + "\n".join(inner)


def test_no_module_imports_the_package_itself():
    # corral/__init__ imports the pools; a module that imported `corral` back would close a cycle.
    back = [f"{name} imports corral" for name in SOURCES if name != PACKAGE
            for target, _line, _inner in _imports(name, SOURCES[name]) if target == PACKAGE]
    assert not back, "\n".join(back)


def test_the_public_surface_is_all_and_every_other_module_is_private():
    assert sorted(corral.__all__) == sorted([
        "ThreadPool", "ThreadPoolExecutor", "Future", "Pool", "ProcessPoolExecutor", "blocking", "patch", "share",
        "budget", "Budget", "BudgetSource", "native_pools", "__version__"])
    for name in corral.__all__:
        assert hasattr(corral, name), name
        assert f"corral.{name}" not in MODULES, f"corral.{name} is both a public name and a module"
    # corral.dask is the one public module (issue 15 fixes its name: `--preload corral.dask`); it imports
    # distributed, so the package does not import it.
    public_modules = [name for name in SOURCES if name != PACKAGE and not name.rsplit(".", 1)[1].startswith("_")]
    assert public_modules == ["corral.dask"], f"modules without a leading underscore: {public_modules}"
    code = "import corral, sys; print('corral.dask' in sys.modules, 'distributed' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
