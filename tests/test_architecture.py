"""The package reads as the pipeline: stage layers, no import circles, no private names
taken across modules, docstring-only package files, modules of one concern.

The layer rules live in ``pyproject.toml`` (``[tool.importlinter]``) and are drawn in
``docs/architecture.md``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from ser.core import paths

PACKAGE = paths.ROOT / "ser"
MODULES = sorted(PACKAGE.rglob("*.py"))
#: A module past this many lines holds more than one concern; split it.
MAX_LINES = 800


def _name(path: Path) -> str:
    parts = path.relative_to(paths.ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_layer_contracts_hold():
    """``lint-imports`` in its own process: it reconfigures logging, which would silence
    the loggers of every module already imported here."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         f"sys.exit(lint_imports(config_filename={str(paths.ROOT / 'pyproject.toml')!r}, no_cache=True))"],
        capture_output=True, text=True, cwd=paths.ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[run.stdout.find("Contracts"):] + run.stderr


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    """Imports inside functions count too: a lazy import does not hide a circle."""
    graph = grimp.build_graph("ser")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert _cycles(edges) == []


def _private_uses(path: Path) -> list[str]:
    """``from ser.x import _name`` or ``mod._name`` on a module imported from ser."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ser"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ser"):
                    aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_private_use_finder_catches_both_forms(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from ser.data import demo\nfrom ser.core.atomic import _json_default\n"
                   "demo._quota(1)\nlocal._ok = 1\n")
    assert _private_uses(src) == ["line 2: from ser.core.atomic import _json_default",
                                  "line 3: demo._quota"]


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_private_name_taken_from_another_module(path):
    assert _private_uses(path) == []


@pytest.mark.parametrize("path", [p for p in MODULES if p.name == "__init__.py"], ids=_name)
def test_package_files_hold_only_a_docstring(path):
    """No re-export shims: code imports from the module that defines a name."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    assert body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    assert all(isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"]
               for n in body[1:]), f"{_name(path)} holds code besides its docstring"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_hold_one_concern(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{_name(path)} has {n} lines; split it by concern"
