"""The layer rule, checked on every import in the tree (module-level and lazy ones alike).

core (ttc/core)  <  plugins (workers/ < verifiers/; strategies/)  <  application (the rest of ttc/)

A module may import its own layer and the layers below it, never one above; and no
chain of imports leads back to where it started. Imports under `if TYPE_CHECKING:` are
for annotations only and never run, so they are not counted. README.md, "Architecture", says why.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ttc

ROOT = Path(__file__).resolve().parents[2]
#: What `from ttc import NAME` loads (ttc/__init__ imports lazily, by this map).
PUBLIC: dict[str, str] = ttc._PUBLIC
PACKAGES = ("ttc", "strategies", "verifiers", "workers")

#: Layer of a module -> the layers it may import from.
ALLOWED = {
    "core": {"core"},
    "workers": {"core", "workers"},
    "verifiers": {"core", "workers", "verifiers"},
    "strategies": {"core", "strategies"},
    "application": {"core", "workers", "verifiers", "strategies", "application"},
}


def layer(module: str) -> str:
    if module == "ttc.core" or module.startswith("ttc.core."):
        return "core"
    top = module.split(".")[0]
    return "application" if top == "ttc" else top


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (resolved to the longest known module name)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]  # importlib.import_module("x.y"): an import all the same
        if isinstance(node, ast.ImportFrom) and (node.module or "") == "ttc" and not node.level:
            # `from ttc import Engine` loads what ttc/__init__ maps the name to.
            names += [PUBLIC[a.name] for a in node.names if a.name in PUBLIC]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):  # a package's own parents
                found.add(name)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (annotations only: never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, m, set(mods)) for m, p in mods.items()}


def test_no_module_imports_a_layer_above_its_own():
    bad = [f"{m} ({layer(m)}) imports {d} ({layer(d)})"
           for m, deps in graph().items() for d in sorted(deps) if layer(d) not in ALLOWED[layer(m)]]
    assert not bad, "\n".join(bad)


def test_there_is_no_import_cycle():
    g = graph()
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in sorted(g.get(m, ())):
            if seen.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in seen:
                visit(d, path + [d])
        seen[m] = 2

    for m in sorted(g):
        if m not in seen:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_walk_sees_the_imports_it_checks():
    """The checker itself: it finds lazy imports inside functions and resolves `from x import y`."""
    g = graph()
    assert "ttc.core.registry" in g["ttc.engine"]
    assert "workers.ray_pool" in g["ttc.engine"]  # imported lazily, inside a method
    assert layer("ttc.core.context") == "core" and layer("ttc.engine") == "application"


@pytest.mark.parametrize("source", [
    "def f():\n    from ttc.engine import Engine\n    return Engine\n",  # lazily, inside a function
    "from ttc import Engine\n",  # through ttc/__init__'s lazy names
    "import importlib\nEngine = importlib.import_module('ttc.engine').Engine\n",  # by string
    "from typing import TYPE_CHECKING\nif not TYPE_CHECKING:\n    import ttc.engine\n",  # runs at run time
])
def test_an_upward_import_would_be_caught(tmp_path, source):
    """A core module that imports the engine, however it does it, is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    deps = imports(bad, "ttc.core.bad", set(modules()))
    assert deps == {"ttc.engine"} and layer("ttc.engine") not in ALLOWED[layer("ttc.core.bad")]
