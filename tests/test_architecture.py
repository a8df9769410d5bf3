"""The import graph of the project, read from the source with ``ast`` (nothing is imported). Every import
statement counts, function-local ones included: a deferred import still makes the two modules depend on each
other, it only hides the cycle from the interpreter. docs/architecture.md describes the floors.

* Three floors: contract (0) <- kernels, cluster (1) <- the stages (2). A package may import packages of a lower
  floor and itself, never a higher floor nor another package of its own floor 0 or 1. ``kernels`` are the pure
  array functions, ``cluster`` the Dask/Slurm infrastructure; any stage may use either.
* Stage to stage (within floor 2): an import from one stage (``STAGES``) into another must be on
  ``ALLOWED_STAGE_IMPORTS`` with its reason, every entry there must still be used, so that the list stays short
  and true, and the allowed arrows between stages must not form a cycle.
* ``kernels`` imports nothing of the project but ``contract`` (and other kernels) and does no file I/O.
* No import cycle between the modules of the project.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"contract": 0, "kernels": 1, "cluster": 1, "simulate": 2, "features": 2, "training": 2, "inference": 2,
          "labelling": 2, "rvae": 2}
STAGES = {"simulate", "features", "training", "inference", "labelling", "rvae"}
ALLOWED_STAGE_IMPORTS = {
    # (importing package or module, imported stage): why it cannot go through contract or kernels
    ("training.store", "simulate"): "a store's label/case/environment rows are checked against the simulator's plan "
                                    "of its config (simulate.verify)",
    ("features.encode", "simulate"): "a store without noisy patches has them made again from its clean scans and "
                                     "seeds by the simulator's own recipe (simulate.patches)",
    ("inference", "training"): "the trained models are loaded and run (training.evaluate, training.phase_model)",
    ("inference.build", "simulate"): "building a model on demand simulates a store for the frame's context",
    ("inference.build", "features"): "building a model on demand encodes that store",
    ("labelling", "inference"): "pre-labels are the classifier's sites and classes; labels are scored by inference "
                                "score",
    ("labelling.demo", "simulate"): "the demo project labels a simulated full field",
    ("rvae", "training"): "the checkpoint loader and stamps, LightningCLI and Slurm submission are training's",
}


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
            own = module.split(".")[0]
            if top != own and LAYERS[top] >= layer and not (own in STAGES and top in STAGES):
                offences.append(f"{module} imports {target}")  # stage to stage: test_stage_imports_are_allow_listed
    assert not offences, "imports against the layering " + str(LAYERS) + ":\n" + "\n".join(sorted(offences))


def _allowance(module: str, stage: str):
    """The ``ALLOWED_STAGE_IMPORTS`` key that lets ``module`` import ``stage``, or None."""
    for key in ALLOWED_STAGE_IMPORTS:
        importer, imported = key
        if imported == stage and (module == importer or module.startswith(importer + ".")):
            return key
    return None


def _stage_imports() -> dict[tuple[str, str], str]:
    """(importing module, imported module) -> imported stage, for every import from one stage into another."""
    out = {}
    for module, path in _modules().items():
        own = module.split(".")[0]
        for target in _imports(module, path):
            top = target.split(".")[0]
            if own in STAGES and top in STAGES and top != own:
                out[(module, target)] = top
    return out


def test_stage_imports_are_allow_listed():
    offences = [f"{module} imports {target}" for (module, target), stage in _stage_imports().items()
                if _allowance(module, stage) is None]
    assert not offences, ("stage-to-stage imports not on ALLOWED_STAGE_IMPORTS (move the shared code to kernels/ "
                          "or contract/, or add the pair with its reason):\n" + "\n".join(sorted(offences)))


def test_every_allowed_stage_import_is_used():
    used = {_allowance(module, stage) for (module, _), stage in _stage_imports().items()}
    unused = [key for key in ALLOWED_STAGE_IMPORTS if key not in used]
    assert not unused, f"ALLOWED_STAGE_IMPORTS entries no import needs any more (remove them): {unused}"
    for importer, imported in ALLOWED_STAGE_IMPORTS:
        assert importer.split(".")[0] in STAGES and imported in STAGES and ALLOWED_STAGE_IMPORTS[(importer, imported)]


def test_allowed_stage_arrows_form_no_cycle():
    graph = {}
    for importer, imported in ALLOWED_STAGE_IMPORTS:
        graph.setdefault(importer.split(".")[0], set()).add(imported)
    order, seen, active = [], set(), set()

    def visit(stage, path):
        assert stage not in active, f"ALLOWED_STAGE_IMPORTS has a cycle: {' -> '.join(path + [stage])}"
        if stage in seen:
            return
        active.add(stage)
        for nxt in sorted(graph.get(stage, ())):
            visit(nxt, path + [stage])
        active.discard(stage)
        seen.add(stage)
        order.append(stage)

    for stage in sorted(STAGES):
        visit(stage, [])
    assert set(order) == STAGES


def test_kernels_import_only_contract():
    offences = [f"{module} imports {target}" for module, path in _modules().items() if module.startswith("kernels")
                for target in _imports(module, path) if target.split(".")[0] not in ("contract", "kernels")]
    assert not offences, "kernels may import only contract and kernels:\n" + "\n".join(sorted(offences))


IO_MODULES = {"os", "pathlib", "shutil", "io", "json", "pickle", "zarr", "dask", "distributed", "h5py", "tifffile",
              "subprocess", "argparse", "jsonargparse", "logging", "tqdm"}
IO_NAMES = {"open", "Path", "print", "input"}
IO_ATTRIBUTES = {"load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "fromfile", "tofile",
                 "read_text", "write_text", "read_bytes", "write_bytes"}


def io_uses(path: Path) -> list[str]:
    """File I/O and global state in a module: imports of I/O or orchestration libraries, calls of ``open``,
    ``Path``, ``print``, ``x.load``/``x.save``-like methods, and ``global`` statements, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            names = []
        found += [f"{node.lineno}: import {n}" for n in names if n.split(".")[0] in IO_MODULES]
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in IO_NAMES:
                found.append(f"{node.lineno}: {f.id}(...)")
            elif isinstance(f, ast.Attribute) and f.attr in IO_ATTRIBUTES:
                found.append(f"{node.lineno}: .{f.attr}(...)")
        elif isinstance(node, ast.Global):
            found.append(f"{node.lineno}: global {', '.join(node.names)}")
    return found


def test_kernels_do_no_io():
    offences = [f"{path.relative_to(REPO)}:{use}" for module, path in _modules().items()
                if module.startswith("kernels") for use in io_uses(path)]
    assert not offences, "kernels are pure array functions (no file I/O, no global state):\n" + "\n".join(offences)


def test_io_detector_finds_io(tmp_path):
    """The detector itself: every kind it looks for is found, and array code is not."""
    src = tmp_path / "m.py"
    src.write_text("import numpy as np\nfrom pathlib import Path\nimport zarr\n_n = 0\n\n\ndef f(x):\n"
                   "    global _n\n    np.save('a.npy', x)\n    with open('b') as fh:\n        return fh\n")
    assert sorted(u.split(": ")[1] for u in io_uses(src)) == [".save(...)", "global _n", "import pathlib",
                                                             "import zarr", "open(...)"]
    src.write_text("import numpy as np\nfrom scipy import ndimage\n\n\ndef f(x):\n"
                   "    return ndimage.zoom(np.asarray(x), 2)\n")
    assert io_uses(src) == []


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
