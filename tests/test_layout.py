"""The import graph runs one way: no module imports a module that (directly or through others) imports it back,
counting imports inside functions too; methods use only the framework's public API (parbench.api, as a plugin would), and the framework reaches methods
only through the registry's lazy names."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("parbench", "promptpar", "baselines")
# what a method (promptpar/, baselines/) may import from the framework: the public API a plugin imports
PUBLIC = {"parbench.api"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Internal modules a file imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for n in names:
            while n and n not in modules:  # `from a.b import c`: the module a.b.c if it is one, else a.b
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = _imports(path, modules) - {name}
        # a package's __init__ importing its own submodules is how it re-exports them, not a dependency back
        graph[name] = {d for d in deps if not (path.name == "__init__.py" and d.startswith(name + "."))}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_methods_use_only_public_framework_pieces_and_the_framework_never_imports_methods():
    graph = _graph()
    for mod, deps in graph.items():
        top = mod.split(".")[0]
        if top in ("promptpar", "baselines"):
            framework = {d for d in deps if d.startswith("parbench")}
            assert framework <= PUBLIC, (mod, sorted(framework - PUBLIC))
            other_methods = {
                d for d in deps if d.split(".")[0] in ("promptpar", "baselines") and d.split(".")[0] != top
            }
            assert not other_methods, (mod, other_methods)
        else:
            assert not {d for d in deps if d.split(".")[0] in ("promptpar", "baselines")}, mod


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
