"""The modules of src/ import each other without a cycle, and src/ never imports an entry point.

Imports are read from the source with ``ast`` (top-level and function-level alike, since a deferred import is still a
dependency), so this runs in well under a second and needs no MindSpore.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("train", "eval", "export", "preprocess", "postprocess")


def module_name(path):
    """'src/model/layers.py' -> 'src.model.layers'; a package's __init__.py -> the package."""
    rel = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def src_modules():
    """{module name: file path} of every Python file under src/."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "src")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[module_name(path)] = path
    return found


def imported_names(path, module):
    """Absolute names of everything ``path`` (module ``module``) imports: ``import a.b`` gives a.b, ``from a import
    b`` gives a.b and a (b may be a module or a name inside a), relative imports are resolved."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), filename=path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph():
    """{module: set of src modules it imports} over src/."""
    modules = src_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            # ``from src.model import embedder`` names the module; ``from src.model.embedder import Embedder`` names
            # a class inside it: the longest prefix that is a module is the dependency.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_src_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "src.train.loop" in graph["src.train.launch"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_src_never_imports_an_entry_point():
    offenders = [module for module, path in src_modules().items()
                 if {name.partition(".")[0] for name in imported_names(path, module)} & set(ENTRY_POINTS)]
    assert not offenders, f"these modules import an entry point: {offenders}"
