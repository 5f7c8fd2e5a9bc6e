"""The package's shape, checked from its source: who may import whom, no import cycles,
modules of at most 400 lines. Every import counts, at module level or inside a function.

Data flows one way: spec -> engines -> train -> store -> results -> {sweep, report} ->
runner -> {cli, api}. `sweep` and `report` both read the answer from `results` and never
import each other; only the runner (and sweep/ itself) plans a sweep; nothing in the
library imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lenet_lab"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The lenet_lab modules that module `name` imports, anywhere in it."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: imports(name) for name in MODULES}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("source, target", [
    ("lenet_lab.sweep", "lenet_lab.report"), ("lenet_lab.report", "lenet_lab.sweep"),
    ("lenet_lab.engines", "lenet_lab.train"), ("lenet_lab.results", "lenet_lab.sweep"),
    ("lenet_lab.results", "lenet_lab.report"), ("lenet_lab.store", "lenet_lab.results"),
    ("lenet_lab.report", "lenet_lab.cli"), ("lenet_lab.sweep", "lenet_lab.cli"),
    ("lenet_lab.sweep", "lenet_lab.runner"), ("lenet_lab.report", "lenet_lab.runner"),
    ("lenet_lab.results", "lenet_lab.runner"),
])
def test_no_import_against_the_flow(source: str, target: str) -> None:
    wrong = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() if _within(a, source)
                   for b in targets if _within(b, target))
    assert wrong == []


def test_nothing_in_the_library_imports_the_cli() -> None:
    """The CLI and the API are adapters over the library: the library never climbs back to
    the CLI (the command's entry point, lenet_lab.__main__, is the CLI's)."""
    wrong = sorted(f"{a} -> {b}" for a, targets in GRAPH.items()
                   if not _within(a, "lenet_lab.cli") and a != "lenet_lab.__main__"
                   for b in targets if _within(b, "lenet_lab.cli"))
    assert wrong == []


def test_only_the_runner_plans_a_sweep() -> None:
    """One driver for every way a sweep runs: outside sweep/, only the runner names
    plan_sweep or run_sweeps."""
    planners = sorted(name for name, path in MODULES.items()
                      if not _within(name, "lenet_lab.sweep") and name != "lenet_lab.runner"
                      and any(isinstance(node, (ast.Name, ast.alias, ast.Attribute)) and
                              (getattr(node, "id", None) or getattr(node, "name", None) or
                               getattr(node, "attr", None)) in ("plan_sweep", "run_sweeps",
                                                                "run_sweep", "run_workers")
                              for node in ast.walk(ast.parse(path.read_text()))))
    assert planners == []


def test_sql_and_sqlalchemy_only_in_store() -> None:
    users = sorted(name for name, path in MODULES.items() if not _within(name, "lenet_lab.store")
                   and any(isinstance(node, (ast.Import, ast.ImportFrom)) and "sqlalchemy" in (
                       getattr(node, "module", None) or "".join(a.name for a in node.names))
                       for node in ast.walk(ast.parse(path.read_text()))))
    assert users == []


def test_no_import_cycles() -> None:
    cycles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checks_see_imports_inside_functions() -> None:
    """The graph is read from the whole source: an import in a function body counts."""
    assert "lenet_lab.engines.torch_fused" in GRAPH["lenet_lab.bench"]  # inside run_bench


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_400_lines(name: str) -> None:
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES
