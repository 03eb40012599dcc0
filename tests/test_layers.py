"""The package's shape: one import name, imports that point down, no module pair in a circle.

``docs/design.md`` opens with the map this file checks: each subpackage may import only
the ones below it (and ``ops``/``tools``, which sit beside), and no two modules import
each other, not even under ``TYPE_CHECKING`` or inside a function (a ``Protocol`` in the
lower module breaks such a circle). Imports are read from the source with ``ast``, so
the test sees every import, wherever it stands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mioreactor"

# package -> the packages its modules may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "reactor": set(),
    "workers.core": {"reactor"},
    "workers.tls": {"reactor", "workers.core"},
    "workers.http": {"reactor", "workers.core", "workers.ops"},
    "workers.websocket": {"workers.core"},
    "workers.ops": {"reactor", "workers.core", "workers.tools"},
    "workers.tools": {"reactor", "workers.ops"},
    "workers.asgi": {"reactor", "workers.core", "workers.http", "workers.ops",
                     "workers.websocket"},
    "workers.server": {"reactor", "workers.core", "workers.tls", "workers.http",
                       "workers.asgi", "workers.ops", "workers.tools"},
    "workers.process": {"reactor", "workers.core", "workers.tls", "workers.http",
                        "workers.asgi", "workers.ops", "workers.tools", "workers.server"},
}


def _modules() -> dict[str, Path]:
    found = {PACKAGE: ROOT / "__init__.py", f"{PACKAGE}.__main__": ROOT / "__main__.py",
             f"{PACKAGE}.cli": ROOT / "cli.py"}
    for top in ("reactor", "workers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([PACKAGE, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module of ours that ``name`` imports, resolved to its full name."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from . import sys": the submodule, not the package; "from .x import y": x
            targets = [f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in MODULES else mod
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # the longest prefix that is one of our modules
            parts = target.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            if parts and ".".join(parts) != name:
                yield ".".join(parts)


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    rest = module.removeprefix(PACKAGE + ".")
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if rest == layer or rest.startswith(layer + "."):
            return layer
    return None


def test_no_top_level_name_but_mioreactor_is_imported() -> None:
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] not in ("reactor", "workers", "cli"), (
                    f"{name} imports {node.module}: use a relative import")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in ("reactor", "workers", "cli"), name


def test_no_two_modules_import_each_other() -> None:
    pairs = sorted({tuple(sorted((a, b))) for a, deps in GRAPH.items() for b in deps
                    if a in GRAPH.get(b, ())})
    assert pairs == []


def test_there_is_no_import_cycle_at_all() -> None:
    # Tarjan-free: repeatedly remove modules that import nothing left; what stays is cyclic.
    # A package's __init__ that re-exports its modules is allowed to point at them.
    graph = {a: {b for b in deps if not a.startswith(b + ".") and not b.startswith(a + ".")}
             for a, deps in GRAPH.items()}
    graph = {a: deps for a, deps in graph.items()
             if not MODULES[a].name == "__init__.py"}
    changed = True
    while changed:
        changed = False
        for a in list(graph):
            if not graph[a] & graph.keys():
                del graph[a]
                changed = True
    assert sorted(graph) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m)))
def test_imports_point_down(module: str) -> None:
    layer = _layer(module)
    assert layer is not None
    allowed = ALLOWED[layer] | {layer}
    wrong = sorted(dep for dep in GRAPH[module] if _layer(dep) not in allowed)
    assert wrong == [], f"{module} ({layer}) may import only {sorted(allowed)}"


def test_every_subpackage_says_what_it_owns() -> None:
    for top in ("reactor", "workers"):
        for init in (ROOT / top).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc and len(doc.splitlines()) >= 3, f"{init} has no docstring saying what it owns"
