"""The import graph of the stages: a strict layering (no upward imports, hence no cycles between packages) and
no cycles between the modules of the project, read from the source with ``ast`` (nothing is imported). Every
import statement counts, function-local ones included: a deferred import still makes the two modules depend on
each other, it only hides the cycle from the interpreter.

Layers (a package may import only packages of a lower layer, and itself):
contract (0) <- cluster (1) <- simulate, features (2) <- training (3) <- inference (4) <- labelling, rvae (5).
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"contract": 0, "cluster": 1, "simulate": 2, "features": 2, "training": 3, "inference": 4,
          "labelling": 5, "rvae": 5}


def _modules(repo: Path = REPO, packages=LAYERS) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``packages`` under ``repo``."""
    out = {}
    for package in packages:
        root = repo / package
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(module: str, path: Path, packages=LAYERS) -> set[str]:
    """Names in ``packages`` imported by ``module``: every import statement, at module scope or inside a function,
    class or conditional."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
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
    return {name for name in found if name.split(".")[0] in packages}


def test_no_upward_imports():
    offences = []
    for module, path in _modules().items():
        layer = LAYERS[module.split(".")[0]]
        for target in _imports(module, path):
            top = target.split(".")[0]
            if top != module.split(".")[0] and LAYERS[top] >= layer:
                offences.append(f"{module} imports {target}")
    assert not offences, "imports against the layering " + str(LAYERS) + ":\n" + "\n".join(sorted(offences))


def import_cycles(repo: Path = REPO, packages=LAYERS) -> list[list[str]]:
    """Module import cycles among ``packages`` under ``repo``, every import statement read (function-local ones
    too). One cycle per back edge of a depth-first search, each as ``[a, b, ..., a]``; [] when there is none."""
    modules = _modules(repo, packages)
    graph = {m: sorted(t for t in _imports(m, p, packages=packages) if t in modules and t != m)
             for m, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_module_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles (function-local imports included):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_cycle_detector_finds_a_cycle_of_function_local_imports(tmp_path):
    """The detector itself: two modules that import each other only inside functions are a cycle."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from . import a\n")  # imports a, is imported by nobody: no cycle
    cycles = import_cycles(tmp_path, {"pkg": 0})
    assert len(cycles) == 1 and set(cycles[0]) == {"pkg.a", "pkg.b"} and cycles[0][0] == cycles[0][-1]
    (pkg / "b.py").write_text("def g():\n    return 1\n")
    assert import_cycles(tmp_path, {"pkg": 0}) == []


def test_contract_imports_no_stage():
    for module, path in _modules().items():
        if module.startswith("contract"):
            assert all(t.startswith("contract") for t in _imports(module, path)), module


SKIP_DIRS = {"__pycache__", "data", "runs", "build", "logs", "lightning_logs", "node_modules"}
CITED_TEST = re.compile(r"\btests/\s*(?:#\s*)?(test_\w+\.py)")  # a citation may break after "tests/"


def _project_sources(repo: Path = REPO) -> list[Path]:
    """The project's .py files (hidden folders such as .venv, caches, data and run folders left out unread)."""
    out = []
    for folder, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if not (d.startswith(".") or d in SKIP_DIRS or d.endswith((".zarr", ".egg-info")))]
        out += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(out)


def test_cited_test_files_exist():
    """A docstring or comment that cites ``tests/test_*.py`` as evidence cites a file that is there."""
    missing = [f"{path.relative_to(REPO)}: tests/{name}" for path in _project_sources()
               for name in CITED_TEST.findall(path.read_text(encoding="utf-8"))
               if not (REPO / "tests" / name).is_file()]
    assert not missing, "cited test files that do not exist:\n" + "\n".join(missing)
