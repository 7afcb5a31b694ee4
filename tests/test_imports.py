"""The one-way import rule of the team style guide, checked: no import cycle inside seqlab, and
no import of a seqlab module inside a function (where it would hide one)."""

from __future__ import annotations

import ast
import pathlib

import seqlab

ROOT = pathlib.Path(seqlab.__file__).parent


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = pathlib.Path(*name.split("."))
    return (ROOT.parent / relative).with_suffix(".py").is_file() or (
        ROOT.parent / relative / "__init__.py"
    ).is_file()


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The seqlab modules an import statement loads (``from pkg import sub`` loads
    ``pkg.sub`` when that is a module, else ``pkg``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "seqlab"]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing package
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "seqlab":
        return []
    names = [f"{base}.{alias.name}" for alias in node.names]
    found = [name for name in names if is_module(name)]
    return found if len(found) == len(names) else found + [base]


def with_packages(targets: list[str]) -> set[str]:
    """The modules that loading ``targets`` runs: each one and every package above it
    (``seqlab.unroll._reference`` runs ``seqlab/unroll/__init__.py`` first), less the
    root package ``seqlab``, which every import inside it has entered already."""
    loaded = set()
    for target in targets:
        parts = target.split(".")
        loaded.update(".".join(parts[:end]) for end in range(2, len(parts) + 1))
    return loaded


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node, package: str, in_function: bool = False):
    """(line, seqlab modules, inside a function) of every import statement under
    ``node``, skipping ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue  # annotations only: never run
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child.lineno, _targets(child, package), in_function
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        yield from _imports(child, package, inner)


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> seqlab modules it imports when it runs, imports found inside functions)."""
    graph, nested = {}, []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for line, targets, in_function in _imports(tree, package):
            if in_function and targets:
                nested.append(f"{name}:{line} imports {', '.join(targets)}")
            edges.update(with_packages(targets))
        # a module's own packages are already running when it loads
        graph[name] = edges - {name} - with_packages([name])
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same node, or None."""
    state, stack = {}, []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = walk(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_the_layers():
    graph, _ = import_graph()
    assert "seqlab.experiments._train" in graph["seqlab.experiments._run"]
    assert "seqlab.kernels" in graph["seqlab.unroll._pallas"]
    assert len(graph) >= 50


def test_no_import_cycle_inside_seqlab():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_seqlab_import_inside_a_function():
    _, nested = import_graph()
    assert nested == [], "imports inside functions hide the import order:\n" + "\n".join(nested)


def test_the_core_never_imports_the_experiments_layer():
    graph, _ = import_graph()
    top = ("seqlab.experiments", "seqlab.cli", "seqlab.demo")
    core = [m for m in graph if not m.startswith(top)]
    offenders = {
        m: sorted(t for t in graph[m] if t.startswith("seqlab.experiments"))
        for m in core
        if m != "seqlab"  # seqlab/__init__ loads seqlab.experiments lazily, by importlib
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_importing_a_submodule_runs_its_packages_init():
    """The cycle ``unroll._scan -> parallel -> parallel._api -> unroll._reference`` ran
    ``unroll/__init__`` (which imports ``_scan``) and hid behind ``seqlab/__init__``'s
    import order: the graph sees such edges."""
    graph = {"seqlab.a._x": {"seqlab.b"}, "seqlab.b._y": with_packages(["seqlab.a._z"])}
    graph |= {"seqlab.a": {"seqlab.a._x"}, "seqlab.b": {"seqlab.b._y"}}
    assert find_cycle(graph) is not None
    assert with_packages(["seqlab.unroll._reference"]) == {
        "seqlab.unroll",
        "seqlab.unroll._reference",
    }


# (importer, private module of another package, why): each one justified here.
PRIVATE_IMPORTS_ALLOWED = {
    # The kernels reuse each cell's update and its hand-derived backward: one derivation
    # per cell (seqlab/cells/_affine.py), not a copy per implementation.
    ("seqlab.kernels.gru", "seqlab.cells._gru"),
    ("seqlab.kernels.lstm", "seqlab.cells._lstm"),
    ("seqlab.kernels.rnn", "seqlab.cells._rnn"),
}


def private_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, module) for every import of a package's private module (``seqlab.x._y``)
    from outside that package (``seqlab._z``, private to seqlab as a whole, is fine)."""
    found = set()
    for importer, targets in graph.items():
        for target in targets:
            parts = target.split(".")
            private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
            if private is None or private < 2:
                continue
            package = ".".join(parts[:private])
            if importer != package and not importer.startswith(package + "."):
                found.add((importer, target))
    return found


def test_no_package_imports_another_packages_private_module():
    graph, _ = import_graph()
    found = private_imports(graph)
    assert found - PRIVATE_IMPORTS_ALLOWED == set(), sorted(found - PRIVATE_IMPORTS_ALLOWED)
    assert PRIVATE_IMPORTS_ALLOWED - found == set(), "stale allow-list entries"
    assert private_imports({"seqlab.a.m": {"seqlab.b._c", "seqlab._d", "seqlab.a._e"}}) == {
        ("seqlab.a.m", "seqlab.b._c")
    }
