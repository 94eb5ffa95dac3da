"""Import hygiene: the headless side never loads textual, the cockpit never loads torch, `cluster` imports only
the command it runs, and no import cycle joins two packages or two modules."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import cockpit

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("textual", "torch", "deepspeed", "transformers")


def loaded_after(code: str, modules: tuple[str, ...] = HEAVY) -> dict[str, bool]:
    """Which of `modules` are in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {modules!r}}}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def all_modules(package: str, skip: str | None = None) -> list[str]:
    """Every module of the package but its `__main__`s (importing one runs its command)."""
    names = [package]
    for info in pkgutil.walk_packages(cockpit.__path__, prefix="cockpit."):
        if (skip is None or not info.name.startswith(skip)) and not info.name.endswith(".__main__"):
            names.append(info.name)
    return names


def running_cluster(*args: str) -> str:
    """Code that runs `./cluster.py ARGS` in this interpreter (as a user would, from the checkout)."""
    return (
        f"import runpy, sys\nsys.argv = ['cluster.py', *{args!r}]\n"
        "try:\n    runpy.run_path('cluster.py', run_name='__main__')\nexcept SystemExit:\n    pass"
    )


def test_cluster_help_loads_no_textual() -> None:
    loaded = loaded_after(running_cluster("--help"))
    assert not loaded["textual"] and not loaded["torch"]


def test_cluster_imports_only_the_command_it_runs() -> None:
    commands = ("cockpit.cli.sweep", "cockpit.cli.nodes", "cockpit.cli.runtime", "cockpit.nodes.ssh")
    assert not any(loaded_after(running_cluster("--help"), commands).values())
    loaded = loaded_after(running_cluster("sweep", "status", "--help"), commands)
    assert loaded == {
        "cockpit.cli.sweep": True,
        "cockpit.cli.nodes": False,
        "cockpit.cli.runtime": False,
        "cockpit.nodes.ssh": False,
    }


def test_headless_modules_load_no_textual_or_torch() -> None:
    modules = all_modules("cockpit", skip="cockpit.tui")
    assert "cockpit.cli" in modules and "cockpit.config" in modules
    loaded = loaded_after("\n".join(f"import {m}" for m in [*modules, "runtime.contract"]))
    assert loaded == dict.fromkeys(HEAVY, False)


def test_cockpit_including_the_app_loads_no_torch() -> None:
    modules = all_modules("cockpit")
    assert "cockpit.tui.app" in modules
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert loaded["textual"]  # the probe would notice the app's imports
    assert not loaded["torch"] and not loaded["deepspeed"] and not loaded["transformers"]


# ---- the shape of the tree: the import graph from the source alone (ast), every import at module level or
# inside a function, except those under `if TYPE_CHECKING:` (typing only; never run: a Textual screen names its
# app that way)
TOP_PACKAGES = ("cockpit", "runtime")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _typing_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST) -> set[str]:
    """Every module (or module.name) an import statement of `tree` names, outside `if TYPE_CHECKING:`."""
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _typing_only(node):
            for branch in node.orelse:
                found |= imported_names(ast.Module(body=[branch], type_ignores=[]))
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        found |= imported_names(node)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports."""
    paths = {module_name(p): p for top in TOP_PACKAGES for p in (REPO / top).rglob("*.py")}
    return {
        name: {m for m in imported_names(ast.parse(path.read_text(), str(path))) if m in paths and m != name}
        for name, path in paths.items()
    }


def package_of(module: str) -> str:
    """The package a module belongs to for the layering: cockpit's first-level packages and modules, runtime whole."""
    parts = module.split(".")
    return parts[0] if parts[0] == "runtime" else ".".join(parts[:2])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, imports in graph.items():
        here = package_of(module)
        packages.setdefault(here, set()).update(p for p in map(package_of, imports) if p != here)
    return packages


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_lazy_imports_and_skips_typing_only_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cockpit.tui.app import CockpitApp\n"
        "def f():\n    from cockpit.sweep.plan import plan\n"
    )
    assert "cockpit.sweep.plan" in imported_names(tree) and "cockpit.tui.app" not in imported_names(tree)


def test_no_import_cycle_between_packages_or_modules() -> None:
    graph = import_graph()
    assert "cockpit.sweep.plan" in graph and "runtime.contract" in graph
    assert cycles(package_graph(graph)) == []
    assert cycles(graph) == []


def test_the_job_layer_is_a_leaf() -> None:
    """cockpit.jobs knows nothing of sweeps, strategies or the rest of the cockpit: only its errors and the contract."""
    packages = package_graph(import_graph())
    assert packages["cockpit.jobs"] <= {"cockpit.errors", "runtime"}
    assert "cockpit.jobs" in packages["cockpit.sweep"]
