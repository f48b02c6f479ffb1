"""No import cycles among subvault's modules, nor among its top-level packages (pure: reads
the source, imports nothing). The packages are layers: `dr` builds on `run`'s executors and
`run` (the `run` job, `check`) on `dr`'s, so neither may import the other both ways.

Every import counts: module-level, function-local and TYPE_CHECKING ones alike, since a
function-local import that closes a cycle only hides it. Importing `a.b.c` also runs
the packages `a` and `a.b`, so those count as imported too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "subvault"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Given the package directory, return every module's dotted name and its file."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _with_parents(name: str, modules: dict[str, Path]) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The subvault modules that module `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= _with_parents(base, modules)
            for alias in node.names:  # `from subvault import pullholds` imports a module
                found |= {f"{base}.{alias.name}"} & modules.keys()
    found.discard(name)
    # A package's own parents are already running when it is imported: not a cycle.
    return {m for m in found if not name.startswith(m + ".")}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen from the top-level packages and modules (subvault.run.job -> subvault.run)."""
    def top(name: str) -> str:
        return ".".join(name.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for name, imported in graph.items():
        packages.setdefault(top(name), set()).update(top(m) for m in imported if top(m) != top(name))
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one example cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, c) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_the_cycle_finder_finds_a_cycle_through_a_function_local_import(tmp_path):
    pkg = tmp_path / "subvault"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("from subvault.cli import cmds\n")
    (pkg / "cli" / "cmds.py").write_text("def f():\n    from subvault.cli.main import cli\n")
    (pkg / "solo.py").write_text("from subvault import cli\nimport subvault.cli.main\n")
    assert cycles(import_graph(pkg)) == [["subvault.cli.cmds", "subvault.cli.main", "subvault.cli.cmds"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (break each, do not hide it in a function):\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_import_cycles_between_packages():
    found = cycles(package_graph(import_graph()))
    assert not found, "packages importing each other (move what both need below them):\n" + "\n".join(" -> ".join(c) for c in found)
