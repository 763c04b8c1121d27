"""The package shows the pipeline: stages import only earlier stages, with no cycles, even through
imports inside functions; no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "probe"
# Data flows one way: Spec -> (model, watched rows) -> Report -> Verdict -> rendering -> the Python face
# (api: the one pipeline, measure, Report) -> commands (each a thin layer over the api), then the test
# helpers and the pytest plugin.
STAGES = [
    "errors",
    "spec",
    "model",
    "records",
    "measurement",
    "judge",
    "experiments",
    "render",
    "api",
    "cli",
    "testing",
    "pytest_plugin",
]


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # probe itself: the lazy top-level API
    return STAGES.index(parts[1]) if parts[1] in STAGES else None


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (annotations only: they never run)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imports(runtime_only: bool) -> dict[str, set[str]]:
    """module -> the probe modules it imports anywhere in its body (functions included)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str] = set()
        tree = ast.parse(path.read_text())
        skip = _type_only(tree) if runtime_only else set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "probe":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "probe")
        graph[module] = {m for m in found if m != module and m in modules}
    return graph


GRAPH = _imports(runtime_only=False)
RUNTIME = _imports(runtime_only=True)


def test_every_module_is_in_a_stage() -> None:
    unplaced = [m for m in GRAPH if m not in ("probe", "probe.__main__") and _stage(m) is None]
    assert not unplaced, f"modules outside the stages {STAGES}: {unplaced}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_stage_imports_a_later_one(module: str) -> None:
    own = _stage(module)
    if own is None:
        return
    later = sorted(m for m in GRAPH[module] if (_stage(m) or 0) > own)
    assert not later, f"{module} ({STAGES[own]}) imports later stages: {later}"


def test_no_import_cycles() -> None:
    # annotations-only imports (``if TYPE_CHECKING:``) never run, so they cannot form a cycle
    # the package __init__ files re-export their stage: an edge into a package is an edge to its modules
    def edges(m: str) -> set[str]:
        return {n for n in RUNTIME[m] if not (n.startswith(m + ".") and m != "probe")}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges(m)):
            if n in ("probe", "probe.__main__"):
                continue
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n) :], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("probe.cli")))
def test_the_command_line_is_a_layer_over_the_api(module: str) -> None:
    """A command parses, calls the API and renders: it reaches the stages only through ``probe.api``
    (so a Python caller gets what a command gets) and ``probe.render``."""
    allowed = ("probe.cli", "probe.api", "probe.render", "probe.errors")
    reached = sorted(m for m in GRAPH[module] if m != "probe" and not m.startswith(allowed))
    assert not reached, f"{module} imports {reached}: go through probe.api"


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree) if isinstance(n, kinds) and n.end_lineno]


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_every_command_line_function_fits_in_40_lines(path: Path) -> None:
    long = [f"{name} ({lines} lines)" for name, lines in _functions(path) if lines > 40]
    assert not long, f"{path.name}: {long}: options go in groups (cli/options.py), the work in the api"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_modules_stay_short(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 400, f"{path.relative_to(REPO)} has {lines} lines: split it by job"


def test_probe_measure_is_the_api_function_whatever_was_imported_first() -> None:
    """``probe.measure`` is one thing, the function; the stage package has its own name, so no
    module class is swapped to make a package callable."""
    import importlib
    import sys
    from types import ModuleType

    import probe

    importlib.import_module("probe.measurement.run")  # importing the stage sets no probe.measure
    from probe.api import measure

    assert probe.measure is measure
    assert type(sys.modules["probe"]) is ModuleType
    assert not (PACKAGE / "measure").exists() and not (PACKAGE / "measure.py").exists()


def test_probe_run_enters_each_stage_once_in_order() -> None:
    """Followed from the command line, ``probe run`` reads the spec, measures, judges and renders:
    each stage entered from the api or the cli once, in the pipeline's order. Left out: the process's
    facts (torchrun's rank), the output paths checked before any work, and the plain objects passed
    between stages (``records``)."""
    import sys
    from types import FrameType
    from typing import Any

    from typer.testing import CliRunner

    from probe.cli import app

    entered: list[str] = []
    facts = ("probe.measurement.distributed", "probe.render.output")

    def stage(frame: FrameType | None) -> str | None:
        name = "" if frame is None else str(frame.f_globals.get("__name__", ""))
        return name.split(".")[1] if name.startswith("probe.") and name not in facts else None

    def watch(frame: FrameType, event: str, arg: Any) -> None:
        callee = stage(frame)
        passed_on = (None, "api", "cli", "records", "errors")  # the objects passed on, not stages of work
        from_api = event == "call" and stage(frame.f_back) in ("api", "cli")
        if from_api and callee not in passed_on and (not entered or entered[-1] != callee):
            entered.append(str(callee))

    argv = ["run", str(REPO / "configs" / "lab1_he_relu.yaml"), "--set", "data.batch_size=8", "--set", "data.batches=1"]
    sys.setprofile(watch)
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        sys.setprofile(None)
    assert result.exit_code == 0, result.output
    assert entered == ["spec", "measurement", "judge", "render"]
