"""The import graph of the stages: a strict layering (no upward imports, hence no cycles between packages) and
no cycles between the modules of the project, read from the source with ``ast`` (nothing is imported).

Layers (a package may import only packages of a lower layer, and itself):
contract (0) <- cluster (1) <- simulate, features (2) <- training (3) <- inference (4) <- labelling, rvae (5).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"contract": 0, "cluster": 1, "simulate": 2, "features": 2, "training": 3, "inference": 4,
          "labelling": 5, "rvae": 5}


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        root = REPO / package
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    """Project modules imported by ``module`` (``top_level_only``: module-scope statements only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in LAYERS}


def test_no_upward_imports():
    offences = []
    for module, path in _modules().items():
        layer = LAYERS[module.split(".")[0]]
        for target in _imports(module, path, top_level_only=False):
            top = target.split(".")[0]
            if top != module.split(".")[0] and LAYERS[top] >= layer:
                offences.append(f"{module} imports {target}")
    assert not offences, "imports against the layering " + str(LAYERS) + ":\n" + "\n".join(sorted(offences))


def test_no_module_import_cycles():
    modules = _modules()
    graph = {m: {t for t in _imports(m, p, top_level_only=True) if t in modules and t != m}
             for m, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_contract_imports_no_stage():
    for module, path in _modules().items():
        if module.startswith("contract"):
            assert all(t.startswith("contract") for t in _imports(module, path, top_level_only=False)), module
