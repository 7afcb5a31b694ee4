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
            edges.update(targets)
        graph[name] = edges - {name}
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
