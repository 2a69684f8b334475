"""Architecture rules as tests: which layer may import which, and no import cycles inside a layer.

The layers (docs/design.md, "Layout and dependency direction"): ``pareco_runtime`` at the
bottom; ``training``, ``export`` and ``bench`` on it (``bench`` may use ``export``); ``pareco_cli``
on top of all four. Developer scripts (``benchmarks``) and ``tests`` may use anything, and nothing
installed uses them. Imports are read from the source with :mod:`ast`, so an import inside a
function (a lazy one) counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("pareco_runtime", "training", "export", "bench", "pareco_cli", "benchmarks", "tests")

# Which project packages each installed package may import (itself included).
ALLOWED = {
    "pareco_runtime": {"pareco_runtime"},
    "training": {"pareco_runtime", "training"},
    "export": {"pareco_runtime", "export"},
    "bench": {"pareco_runtime", "export", "bench"},
    "pareco_cli": {"pareco_runtime", "training", "export", "bench", "pareco_cli"},
}

# Third-party packages the runtime may import: what `pip install pareco` (no extras) installs, and
# torchvision, which only fronts built from a torchvision model need (the `vision` extra).
RUNTIME_THIRD_PARTY = {"torch", "safetensors", "torchvision"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from pkg import mod` imports pkg.mod when mod is a module: count it as such.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(package):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files(package)
        for line, name in _imports(path)
        if name.split(".")[0] in PROJECT and name.split(".")[0] not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_runtime_imports_no_third_party_beyond_torch_and_safetensors():
    import sys

    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _files("pareco_runtime")
        for line, name in _imports(path)
        if (top := name.split(".")[0]) not in sys.stdlib_module_names
        and top not in PROJECT
        and top not in RUNTIME_THIRD_PARTY
        and top != "__future__"
    ]
    assert not wrong, "\n".join(wrong)


def _internal_graph(package: str) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _files(package)}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, target in _imports(path):
            # A package's __init__ re-exporting its modules is not a cycle worth breaking.
            if (
                target in modules
                and target != name
                and not name.startswith(target + ".")
                and not (path.name == "__init__.py" and target.startswith(name + "."))
            ):
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_cycle_inside_a_layer(package):
    cycle = _cycle(_internal_graph(package))
    assert cycle is None, " -> ".join(cycle or [])


def test_nothing_installed_imports_developer_scripts_or_tests():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for package in ALLOWED
        for path in _files(package)
        for line, name in _imports(path)
        if name.split(".")[0] in ("benchmarks", "tests")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an import inside a function is found, relative ones are resolved."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    src = tmp_path / "pkg" / "sub" / "mod.py"
    src.write_text(
        "from . import sibling\nfrom ..base import x\n\ndef f():\n    from training.loop import train\n"
    )
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    found = {name for _, name in _imports(src)}
    assert {"training.loop", "pkg.sub.sibling", "pkg.base"} <= found


# The module map of docs/design.md: one table row per module of the installed packages.
DESIGN = ROOT / "docs" / "design.md"
_MAP_ROW = re.compile(r"^\|\s*`([\w/]+\.py)`\s*\|", re.M)


def _module_map() -> list[str]:
    text = DESIGN.read_text()
    start = text.index("\n## Module map")
    end = text.find("\n## ", start + 1)
    return _MAP_ROW.findall(text[start : end if end != -1 else None])


def test_the_module_map_of_the_design_doc_lists_every_module_and_no_other():
    listed = _module_map()
    on_disk = {str(p.relative_to(ROOT)) for package in ALLOWED for p in _files(package)}
    missing = sorted(on_disk - set(listed))
    gone = sorted(set(listed) - on_disk)
    twice = sorted({m for m in listed if listed.count(m) > 1})
    problems = [f"not in the module map of docs/design.md: {m}" for m in missing]
    problems += [f"in the module map but not on disk: {m}" for m in gone]
    problems += [f"listed twice in the module map: {m}" for m in twice]
    assert not problems, "\n".join(problems)
