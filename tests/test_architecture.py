"""The import graph of keras_vae, read from the source with `ast` (nothing is imported).

Two rules of DESIGN section 4, checked over every module and subpackage:

- the import graph has no cycle. Every import counts, at module level or
  inside a function (a lazy import is still an edge); only imports under
  `if TYPE_CHECKING:` are left out. `keras_vae/__init__.py` importing its
  submodules is an ordinary edge, so a submodule importing the package top
  level (`import keras_vae as kv` in a function) closes a cycle;
- no module uses another module's private names: no `from keras_vae.x
  import _name` and no `x._name` where `x` is a keras_vae module bound to
  some name (`from keras_vae import x`, `import keras_vae as kv; kv.x._name`).

Imports by string (`importlib.import_module("keras_vae.distributed")` in the
package's `__getattr__`) are not seen. Each rule has a self-test on a
synthetic package, so the scanner can fail.
"""

import ast
import pathlib

import pytest

__all__ = ["scan_package", "find_cycles", "private_uses"]

ROOT = pathlib.Path(__file__).resolve().parents[1] / "keras_vae"


# ---------------------------------------------------------------- scanner

def _module_names(root, package):
    """{dotted module name: path} for every .py file below `root` (a package directory)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package] + parts)] = path
    return modules


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree):
    """Every Import/ImportFrom node, at any depth, except under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _base_of(node, module, is_package):
    """Absolute dotted name an ImportFrom refers to (resolves relative imports)."""
    if not node.level:
        return node.module
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def scan_package(root, package):
    """Reads every module of the package at `root`.

    Returns:
      dict module -> {"path", "tree", "edges": [(target, line)],
      "bindings": {local name: module}, "imports": [(base, name, line)]}
      where targets are modules of the package.
    """
    root = pathlib.Path(root)
    names = _module_names(root, package)
    out = {}
    for module, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges, bindings, imports = [], {}, []
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    while target and target not in names:  # import a.b.c -> deepest module
                        target = target.rpartition(".")[0]
                    if not target:
                        continue
                    edges.append((target, node.lineno))
                    if alias.asname:
                        bindings[alias.asname] = alias.name
                    else:
                        first = alias.name.split(".")[0]
                        if first in names:
                            bindings[first] = first
                continue
            base = _base_of(node, module, is_package)
            if base is None or base not in names:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in names:
                    edges.append((full, node.lineno))
                    bindings[alias.asname or alias.name] = full
                else:
                    edges.append((base, node.lineno))
                    imports.append((base, alias.name, node.lineno))
        out[module] = {"path": path, "tree": tree, "edges": edges,
                       "bindings": bindings, "imports": imports}
    return out


def find_cycles(scanned, skip_edge=lambda source, target: False):
    """Import cycles, one per strongly connected component of more than one module.

    Besides the imports, a package is above each of its modules (an edge from
    `pkg` to `pkg.mod`, shown as "contains it"): a module importing its own
    package's top level closes a cycle even when `pkg/__init__.py` does not
    import that module.

    Returns:
      list of dicts: `modules` (sorted names) and `steps`, one shortest cycle
      as "a -> b (file:line)" strings.
    """
    graph = {m: {} for m in scanned}
    for m in scanned:
        parent = m.rpartition(".")[0]
        if parent in graph and not skip_edge(parent, m):
            graph[parent][m] = 0
    for m, info in scanned.items():
        for target, line in info["edges"]:
            if not skip_edge(m, target) and graph[m].get(target, 0) == 0:
                graph[m][target] = line

    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def strongconnect(v):  # Tarjan; the graph has a few dozen nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        start = min(component)
        # Shortest path back to `start` inside the component (breadth first).
        previous, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        found = v
                        break
                    if w in component and w not in previous:
                        previous[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v != start:
            path.insert(1, v)
            v = previous[v]
        path.append(start)
        steps = [f"{a} -> {b} ({_where(scanned, a, graph[a][b])})"
                 for a, b in zip(path, path[1:])]
        cycles.append({"modules": sorted(component), "steps": steps})
    return cycles


def _where(scanned, module, line):
    if line == 0:
        return "contains it"
    path = scanned[module]["path"]
    return f"{path.parent.name}/{path.name}:{line}"


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node):
    """`a.b.c` of an Attribute chain as ["a", "b", "c"], or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id] + parts[::-1]


def private_uses(scanned):
    """Uses of another module's private names, as "file:line: what" strings."""
    found = []
    for module, info in scanned.items():
        for base, name, line in info["imports"]:
            if _private(name) and base != module:
                found.append(f"{_where(scanned, module, line)}: from {base} import {name}")
        seen = set()
        for node in ast.walk(info["tree"]):
            if not isinstance(node, ast.Attribute) or id(node) in seen:
                continue
            parts = _dotted(node)
            if not parts or parts[0] not in info["bindings"]:
                continue
            inner = node.value  # mark the inner links of this chain as seen
            while isinstance(inner, ast.Attribute):
                seen.add(id(inner))
                inner = inner.value
            target = info["bindings"][parts[0]]
            for attr in parts[1:]:
                if f"{target}.{attr}" in scanned:
                    target = f"{target}.{attr}"
                    continue
                if _private(attr) and target != module:
                    found.append(f"{_where(scanned, module, node.lineno)}: "
                                 f"{'.'.join(parts[:parts.index(attr) + 1])} "
                                 f"(private name of {target})")
                break
    return sorted(found)


def _top_level_edge(package):
    """An edge from a submodule to the package's own `__init__` (the top level)."""
    return lambda source, target: target == package and source != package


# ---------------------------------------------------------------- keras_vae

@pytest.fixture(scope="module")
def scanned():
    return scan_package(ROOT, "keras_vae")


def _format(cycles):
    return "\n".join("cycle among " + ", ".join(c["modules"]) + ":\n    "
                     + "\n    ".join(c["steps"]) for c in cycles)


def test_no_import_cycle_among_submodules(scanned):
    """Cycles that do not pass through `import keras_vae` (the package top level)."""
    cycles = find_cycles(scanned, skip_edge=_top_level_edge("keras_vae"))
    assert not cycles, "import cycles in keras_vae:\n" + _format(cycles)


def test_no_import_cycle_through_the_package_top_level(scanned):
    """Every edge counts, also a submodule importing `keras_vae` itself."""
    cycles = find_cycles(scanned)
    assert not cycles, "import cycles in keras_vae:\n" + _format(cycles)


def test_no_private_name_used_across_modules(scanned):
    uses = private_uses(scanned)
    assert not uses, "private names used across modules:\n" + "\n".join(uses)


def test_the_scan_sees_every_module_and_subpackage(scanned):
    paths = {info["path"] for info in scanned.values()}
    assert paths == set(ROOT.rglob("*.py"))
    assert "keras_vae" in scanned and "keras_vae.validation" in scanned


# ---------------------------------------------------------------- self-tests

def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_scanner_finds_a_cycle_through_a_lazy_relative_import(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "from pkg import a\n",
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from .. import a\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n",
        "d.py": "import pkg.c\n",
    })
    scanned = scan_package(tmp_path / "pkg", "pkg")
    cycles = find_cycles(scanned)
    assert [c["modules"] for c in cycles] == [["pkg.a", "pkg.sub.b"]]  # c <-> d is TYPE_CHECKING
    assert "pkg.sub.b -> pkg.a (sub/b.py:2)" in cycles[0]["steps"]


def test_scanner_finds_a_cycle_through_the_package_top_level(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "",  # does not import pkg.a: the package still contains it
        "a.py": "def f():\n    import pkg as p\n    return p\n",
        "b.py": "",
    })
    scanned = scan_package(tmp_path / "pkg", "pkg")
    cycles = find_cycles(scanned)
    assert [c["modules"] for c in cycles] == [["pkg", "pkg.a"]]
    assert cycles[0]["steps"] == ["pkg -> pkg.a (contains it)", "pkg.a -> pkg (pkg/a.py:2)"]
    assert find_cycles(scanned, skip_edge=_top_level_edge("pkg")) == []


def test_scanner_finds_private_imports_and_attributes(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "_x = 1\n__version__ = 2\n",
        "sub/__init__.py": "",
        "sub/b.py": "from pkg import a\nimport pkg as p\nfrom ..a import _x, __version__\n"
                    "def f():\n    return a._x + p.a._x + a.__version__ + p.a.public\n",
        "sub/c.py": "from . import b\ndef g():\n    return b.f\n",
    })
    uses = private_uses(scan_package(tmp_path / "pkg", "pkg"))
    assert uses == ["sub/b.py:3: from pkg.a import _x",
                    "sub/b.py:5: a._x (private name of pkg.a)",
                    "sub/b.py:5: p.a._x (private name of pkg.a)"]
