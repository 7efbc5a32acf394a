"""The package is a stack of layers (docs/architecture.rst): no import cycle (function-local
imports included; ``if TYPE_CHECKING:`` blocks, which never run, excluded), no private name
imported from another file, modules never importing a backend or a layer above them."""

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pysnn

ROOT = Path(pysnn.__file__).resolve().parent

#: the module files: they call the functional layer, never a backend, and nothing above them
MODULES = {
    "pysnn.neuron",
    "pysnn.connection",
    "pysnn.synapse",
    "pysnn.learning",
    "pysnn.sparse",
    "pysnn.local",
    "pysnn.pooling",
    "pysnn.readout",
    "pysnn.forcing",
}
BACKENDS = {"pysnn.native", "pysnn.backends"}
ABOVE_MODULES = {
    "pysnn.engine",
    "pysnn.multistep",
    "pysnn.network",
    "pysnn.models",
    "pysnn.nir",
    "pysnn.conversion",
    "pysnn.distributed",
}
ABOVE_ENGINE = ABOVE_MODULES - {"pysnn.engine"}


def _modules() -> Dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_imports(tree: ast.AST) -> List[ast.stmt]:
    """Import statements that run: everywhere except under ``if TYPE_CHECKING:``."""
    found: List[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> Tuple[Dict[str, Set[str]], List[Tuple[str, str, str]]]:
    modules = _modules()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    prefix = package
                    for _ in range(node.level - 1):
                        prefix = prefix.rpartition(".")[0]
                    base = f"{prefix}.{base}" if base else prefix
                targets = [(base, a.name) for a in node.names]
            for module, imported in targets:
                if not module.startswith("pysnn"):
                    continue
                full = f"{module}.{imported}" if imported else module
                target = full if full in modules else module
                if target in modules and target != name:
                    graph[name].add(target)
                if imported and imported.startswith("_") and full not in modules:
                    private.append((name, module, imported))
    return graph, private


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _layer(name: str, layers: Set[str]) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def test_no_import_cycle():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_no_private_name_crosses_files():
    _, private = _graph()
    assert private == [], f"(importer, module, name): {private}"


def test_modules_import_no_backend_and_nothing_above_them():
    graph, _ = _graph()
    for name in MODULES:
        wrong = sorted(t for t in graph[name] if _layer(t, BACKENDS | ABOVE_MODULES))
        assert wrong == [], f"{name} imports {wrong}"


def test_backends_import_no_layer_above_them():
    """A backend sits below the functional layer and the modules: it imports neither."""
    graph, _ = _graph()
    above = MODULES | ABOVE_MODULES | {"pysnn.functional"}
    for name in graph:
        if _layer(name, BACKENDS):
            wrong = sorted(t for t in graph[name] if _layer(t, above))
            assert wrong == [], f"{name} imports {wrong}"


def test_codegen_imports_no_module_or_layer_above():
    """pysnn.codegen sits beside the functional layer: the neuron module imports it, so it
    imports neither the modules nor the engine (annotations only, under TYPE_CHECKING)."""
    graph, _ = _graph()
    wrong = sorted(t for t in graph["pysnn.codegen"] if _layer(t, MODULES | ABOVE_MODULES))
    assert wrong == [], f"pysnn.codegen imports {wrong}"


def test_engine_imports_nothing_above_it():
    graph, _ = _graph()
    for name in graph:
        if _layer(name, {"pysnn.engine"}):
            wrong = sorted(t for t in graph[name] if _layer(t, ABOVE_ENGINE))
            assert wrong == [], f"{name} imports {wrong}"


def test_the_checks_can_fail():
    """The cycle finder finds a cycle, and the private-name check sees one (a test that cannot
    fail is a defect)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    tree = ast.parse("from pysnn.neuron import _FastLIFStep\nif TYPE_CHECKING:\n    import x\n")
    assert len(_runtime_imports(tree)) == 1
