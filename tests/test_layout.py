"""Unit tier: imports follow the data flow, down the library's rooms (storage, then model and
data, then extract and interventions, then lens, then analysis; probes above the library, the
application above all) and never go back.

The import graph is read from the source (AST), function-local imports included, so a lazy
import cannot hide a dependency. An edge goes to the module an import names (``from a import b``
names ``a.b`` when that is a module, else ``a``); the parent packages Python imports on the way
are not edges (every submodule would otherwise depend on its package's ``__init__``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("interp", "probes", "experiments")


@cache
def modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, source: str, known: set[str]) -> set[str]:
    """The modules in ``known`` that module ``name`` imports anywhere in ``source``."""
    is_package = name in known and modules().get(name, Path()).name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(source)):  # every scope: function-local imports count
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {t for t in targets if t in known and t != name}


@cache
def graph() -> dict[str, frozenset[str]]:
    known = set(modules())
    return {
        name: frozenset(imports_of(name, path.read_text(encoding="utf-8"), known))
        for name, path in modules().items()
    }


def reachable(start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph()[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def find_cycle(nodes: set[str]) -> list[str] | None:
    """One import cycle among ``nodes`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph()[node] & nodes):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def in_package(package: str) -> set[str]:
    return {m for m in modules() if m == package or m.startswith(package + ".")}


def test_the_walker_sees_function_local_and_relative_imports():
    known = {
        "interp",
        "interp.storage.store",
        "interp.model.models",
        "interp.data",
        "interp.data.loader",
    }
    source = (
        "import interp.storage.store\n"
        "def f():\n    from interp.model import models\n"
        "class C:\n    def g(self):\n        from .loader import x\n"
    )
    assert imports_of("interp.data.check", source, known) == {
        "interp.storage.store",
        "interp.model.models",
        "interp.data.loader",
    }
    assert imports_of("interp.lens", "from interp import __version__\n", known) == {"interp"}


def test_no_import_cycle():
    everything = set(modules())
    assert len(in_package("interp")) > 20 and in_package("probes") and in_package("experiments")
    for package in PACKAGES:
        cycle = find_cycle(in_package(package))
        assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle)}"
    cycle = find_cycle(everything)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


# The library's rooms, lowest first: a module imports only from rooms below its own (or from its
# own room). Rooms of one rank are siblings and import neither each other.
LAYERS: list[tuple[str, ...]] = [
    ("interp.errors",),
    ("interp.checks", "interp.metrics", "interp.plots", "interp.timing"),  # leaves beside the flow
    ("interp.storage",),  # what reaches the disk
    ("interp.model", "interp.data"),  # loading and addressing a model; bundled data
    ("interp.extract", "interp.interventions"),  # reading sites; editing them
    ("interp.lens",),
    ("interp.analysis",),
    ("interp.testbeds",),  # models built from the embedded ones (positive controls)
    ("interp.bench",),
    ("interp",),  # the public surface
    ("probes",),
    ("experiments",),  # the application
]


def room(module: str) -> str:
    """The room of ``module``: the longest name of ``LAYERS`` it is or lies in."""
    names = [name for rooms in LAYERS for name in rooms]
    inside = [n for n in names if module == n or module.startswith(n + ".")]
    assert inside, f"{module} lies in no room of LAYERS; give its folder a place there"
    return max(inside, key=len)


def layer_violations(edges: dict[str, frozenset[str]]) -> list[str]:
    """Every import that goes up or sideways between rooms, as ``a -> b (why)``."""
    rank = {name: i for i, rooms in enumerate(LAYERS) for name in rooms}
    out = []
    for source, targets in sorted(edges.items()):
        a = room(source)
        for target in sorted(targets):
            b = room(target)
            if a != b and rank[b] >= rank[a]:
                kind = "up" if rank[b] > rank[a] else "sideways"
                out.append(f"{source} -> {target} ({kind}: {a} to {b})")
    return out


def test_imports_only_go_down_the_layers():
    assert layer_violations(graph()) == []


def test_the_layer_check_sees_a_violation():
    edges = {
        "interp.storage.store": frozenset({"interp.model.models"}),  # up
        "interp.model.sites": frozenset({"interp.data.loader", "interp.errors"}),  # sideways
        "interp.lens.logit": frozenset({"interp.analysis.metrics_x"}),  # up
        "interp.analysis.directions": frozenset({"interp.lens.logit", "interp.extract"}),  # ok
    }
    assert layer_violations(edges) == [
        "interp.lens.logit -> interp.analysis.metrics_x (up: interp.lens to interp.analysis)",
        "interp.model.sites -> interp.data.loader (sideways: interp.model to interp.data)",
        "interp.storage.store -> interp.model.models (up: interp.storage to interp.model)",
    ]


def test_every_module_has_a_room():
    for name in modules():
        room(name)


def test_models_imports_neither_extract_nor_store():
    assert not reachable("interp.model.models") & {"interp.extract", "interp.storage.store"}


def test_store_knows_nothing_of_models_or_extraction():
    forbidden = {
        "interp.model.models",
        "interp.extract",
        "interp.model.backends",
        "interp.model.hooks",
    }
    assert not reachable("interp.storage.store") & forbidden, (
        reachable("interp.storage.store") & forbidden
    )
    assert not graph()["interp.storage.activations"] & forbidden


def test_library_never_imports_the_application():
    application = in_package("experiments")
    for name in in_package("interp") | in_package("probes"):
        assert not graph()[name] & application, f"{name} imports {graph()[name] & application}"


def test_interp_never_imports_probes():
    for name in in_package("interp"):
        assert not graph()[name] & in_package("probes"), f"{name} imports probes"


def test_registry_holds_every_module_that_registers():
    from experiments import EXPERIMENTS, experiment_list

    experiment_list()  # fills the registry
    registering = set()
    for name, path in modules().items():
        if name.startswith("experiments.") and "@register(" in path.read_text(encoding="utf-8"):
            registering.add(name)
    assert {e.run.__module__ for e in EXPERIMENTS.values()} >= registering
    assert len(registering) >= 3


def test_console_script_is_the_application_cli():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"polylens": "experiments.cli:main"}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "latent-language" in done.stdout and "knowledge-boundary" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", "nope"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2 and "unknown experiment 'nope'" in done.stderr
