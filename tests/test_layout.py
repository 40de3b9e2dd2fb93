"""The shape of the code: no import cycles, no private names across modules, CLI only in the CLI.

The import graph covers every import statement of ``pipeline``, ``models`` and ``avel`` (function-level ones
included); a package's own ``__init__`` is no edge for its children (importing ``a.b.c`` runs
``a/b/__init__`` first by definition, not by a choice of the module).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

PACKAGES = ("pipeline", "models", "avel")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` lives in (``a.b.func`` -> ``a.b``); None outside the project."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, list[str]]]:
    """``(imported module path, names)`` of every import statement of one module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for base, names in _imports(module, path):
            for target in [base, *(f"{base}.{n}" for n in names)]:
                r = _resolve(target)
                if r and r != module and not module.startswith(r + "."):
                    graph[module].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_cycle_finder_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_covers_function_level_imports() -> None:
    graph = import_graph()
    # run_demo imports the server inside the function body
    assert "pipeline.demo.server" in graph["pipeline.demo.run"]
    # a package's own __init__ is no edge for its children
    assert "pipeline.stages.download" not in graph["pipeline.stages.download.stage"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_private_names_imported_across_modules() -> None:
    bad = []
    for module, path in MODULES.items():
        for base, names in _imports(module, path):
            if _resolve(base) is None:
                continue
            bad += [
                f"{path.relative_to(REPO)}: from {base} import {n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_only_the_cli_registers_subcommands() -> None:
    bad = []
    for module, path in MODULES.items():
        if module.startswith("pipeline.cli"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        if any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body):
            bad.append(str(path.relative_to(REPO)))
    assert not bad, "register(subparsers) outside pipeline/cli/:\n" + "\n".join(bad)


#: Layers, lowest first: a module imports from its own layer and the ones below, never above.
LAYERS = (
    "pipeline.core",
    "pipeline.backbones",
    "pipeline.stages",
    "models",
    "pipeline.bench",
    "avel",  # the Python API: a facade over the stages and the models
    ("pipeline.cli", "pipeline.demo", "pipeline.rehearsal"),  # commands, and what drives them
)


def _layer(module: str) -> int | None:
    found = None
    for i, layer in enumerate(LAYERS):
        for prefix in (layer,) if isinstance(layer, str) else layer:
            if module == prefix or module.startswith(prefix + "."):
                found = i
    return found


def test_lower_layers_never_import_higher_ones() -> None:
    bad = []
    for module, targets in import_graph().items():
        low = _layer(module)
        for target in targets:
            high = _layer(target)
            if low is not None and high is not None and high > low:
                bad.append(f"{module} (layer {low}) imports {target} (layer {high})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))
