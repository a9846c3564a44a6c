"""The package's imports go one way: tap → stream classes → base stream → transport.

Read from the source (every ``import`` statement, including those under
``TYPE_CHECKING`` and inside functions), so a circle or an upward import fails here
before it fails at import time, or silently couples two layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "tap_asana_vl"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: Each module's layer; a module may import its own layer and the layers below.
#: Modules not listed (command-line tools such as the OAuth helper) count as the top:
#: they may import anything, and nothing listed may import them.
LAYERS: dict[str, int] = {
    # The application: settings, the stream list, the command line.
    "tap": 4,
    "__main__": 4,
    # Stream classes, grouped by parent level.
    "streams": 3,
    "streams.workspace_level": 3,
    "streams.project_level": 3,
    "streams.task_level": 3,
    "streams.subtasks": 3,
    "streams.derived": 3,
    "streams.history": 3,
    # The base stream: listing, records, prefetch, paging.
    "streams.base": 2,
    "streams.listing": 2,
    "streams.prefetch": 2,
    "streams.children_ahead": 2,
    "streams.paging": 2,
    "streams.deletes": 2,
    "streams.search": 2,
    "streams.unplaced_search": 2,
    "streams.changed_tasks": 2,
    "streams.workspace_events": 2,
    "streams.reconcile": 2,
    "streams.full_reads": 2,
    "streams.purge": 2,
    "streams.project_children": 2,
    "streams.children_plan": 2,
    "streams.selection": 2,
    # The HTTP transport and its parts.
    "transport": 1,
    "session": 1,
    "rate_limit": 1,
    "concurrency": 1,
    "run_control": 1,
    # Foundations every layer may use.
    "": 0,
    "errors": 0,
    "heap": 0,
    "worker_pool": 0,
    "packed": 0,
    "gid_table": 0,
    "asana_urls": 0,
    "auth": 0,
    "scopes": 0,
    "sdk_adapter": 0,
    "state_output": 0,
    "timestamps": 0,
    "redaction": 0,
    "progress": 0,
    "user_refs": 0,
    "inputs": 0,
    "cli_errors": 0,
    "settings": 0,
    "schemas": 0,
}
TOP = max(LAYERS.values()) + 1


def module_name(path: Path) -> str:
    """``streams.base`` for tap_asana_vl/streams/base.py, ``""`` for the package root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split(".")) if name else ROOT
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The package's modules that the module at ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                absolute = ".".join([PACKAGE, *base, *([node.module] if node.module else [])])
            else:
                absolute = node.module or ""
            # `from package import module` imports the module; `import name` the package.
            targets = [absolute] + [f"{absolute}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                inner = target.removeprefix(PACKAGE).removeprefix(".")
                if _is_module(inner):
                    found.add(inner)
    found.discard(name)
    return found


def package_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports."""
    return {module_name(path): imports_of(path) for path in sorted(ROOT.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer (or of an unlisted module) from a listed module."""
    return [
        f"{module or PACKAGE} (layer {LAYERS[module]}) imports {target} "
        f"(layer {LAYERS.get(target, TOP)})"
        for module, targets in sorted(graph.items())
        if module in LAYERS
        for target in sorted(targets)
        if LAYERS.get(target, TOP) > LAYERS[module]
    ]


def test_every_module_of_the_core_has_a_layer():
    graph = package_graph()
    unlisted = sorted(m for m in graph if m not in LAYERS)
    # Only command-line tools may stay unlisted; the tap's own modules need a layer.
    assert all(m.startswith(("oauth", "dotenv")) for m in unlisted), unlisted
    assert set(LAYERS) <= set(graph), sorted(set(LAYERS) - set(graph))


def test_the_package_has_no_import_cycle():
    assert find_cycle(package_graph()) is None


def test_imports_only_go_down_the_layers():
    assert upward_imports(package_graph()) == []


def test_the_transport_knows_nothing_of_streams():
    graph = package_graph()
    below_streams = [m for m, layer in LAYERS.items() if layer <= 1 and m in graph]
    assert below_streams
    for module in below_streams:
        assert not {t for t in graph[module] if t.startswith("streams") or t == "tap"}, module


@pytest.mark.parametrize(
    ("graph", "problem"),
    [
        ({"transport": {"streams.base"}, "streams.base": set()}, "upward"),
        ({"errors": {"auth"}, "auth": {"scopes"}, "scopes": {"errors"}}, "cycle"),
    ],
)
def test_the_checks_catch_what_they_are_for(graph, problem):
    """The checks themselves fail on an upward import and on a circle."""
    if problem == "upward":
        assert upward_imports(graph) == ["transport (layer 1) imports streams.base (layer 2)"]
    else:
        assert find_cycle(graph) == ["auth", "scopes", "errors", "auth"]
