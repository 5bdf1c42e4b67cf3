"""The package layering rules (issue #14, docs/architecture.md), checked on the source with `ast`: nothing is imported."""

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).parents[1]
GRAPH_PACKAGES = ("launchkit", "stream", "landing")
MAX_LINES = 500

# The one module of launchkit/ allowed to import loadtests: the `rehearse` command's entry point. The rehearsal
# tool lives in loadtests/ (which ships in the package for it, see pyproject.toml) and the command is the documented
# exception (README "Rehearsing the flash crowd", docs/architecture.md); the servers must never depend on it.
LOADTESTS_IMPORT_ALLOWED_IN = frozenset({"launchkit/cli.py"})


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    text: str
    base: str  # the absolute module imported, or imported from (relative imports resolved)
    names: tuple[str, ...]  # the names of `from base import ...`; empty for `import base`
    type_checking: bool  # under `if TYPE_CHECKING:`: never runs

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}: {self.text}"

    def candidates(self) -> list[str]:
        """Every dotted name the statement may import (`from a import b` may import the module a.b)."""
        return [self.base] + [f"{self.base}.{name}" if self.base else name for name in self.names]

    def reaches(self, top: str) -> bool:
        return any(name == top or name.startswith(f"{top}.") for name in self.candidates())


def sources(root: Path, top: str) -> list[Path]:
    return sorted(
        path for path in (root / top).rglob("*.py")
        if not {"node_modules", "__pycache__"} & set(path.relative_to(root).parts)
    )


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def imports(root: Path, path: Path) -> tuple[Import, ...]:
    """Every import statement in the file, at module level or in any body (functions, try, if)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    guarded = {
        id(inner)
        for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
        for statement in node.body for inner in ast.walk(statement)
    }
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bases = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Going past the top package is an ImportError at run time; resolve it anyway, from the root.
                parts = package.split(".") if package else []
                anchor = ".".join(parts[: max(len(parts) - (node.level - 1), 0)])
                base = ".".join(part for part in (anchor, base) if part)
            bases = [(base, tuple(alias.name for alias in node.names))]
        else:
            continue
        found += [
            Import(path, node.lineno, lines[node.lineno - 1].strip(), base, names, id(node) in guarded)
            for base, names in bases
        ]
    return tuple(sorted(found, key=lambda found_import: found_import.line))


def offending_imports(root: Path, top: str, target: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    return [
        found.where(root)
        for path in sources(root, top) if path.relative_to(root).as_posix() not in allowed
        for found in imports(root, path) if found.reaches(target)
    ]


def import_graph(root: Path, tops: tuple[str, ...]) -> dict[str, dict[str, list[Import]]]:
    """Module → imported module → the statements, for run-time imports between the packages' modules.

    `pkg/__init__.py` is the module `pkg`; `from pkg import name` goes to `pkg.name` when that is a module, else to
    `pkg`. Importing `pkg.sub` also runs `pkg/__init__` first, but that implicit edge is left out: with it, every
    package whose `__init__` imports its own submodules would be a cycle.
    """
    paths = {module_name(root, path): path for top in tops for path in sources(root, top)}
    graph: dict[str, dict[str, list[Import]]] = {module: {} for module in paths}

    def deepest_module(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in paths.items():
        for found in imports(root, path):
            if found.type_checking:
                continue
            submodules = [f"{found.base}.{name}" for name in found.names if f"{found.base}.{name}" in paths]
            targets = set(submodules)
            if len(submodules) < len(found.names) or not found.names:
                targets.add(deepest_module(found.base))
            for target in targets - {None, module}:
                graph[module].setdefault(target, []).append(found)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); only the components that are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(graph[start])))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while (member := stack.pop()) != node:
                        on_stack.discard(member)
                        component.append(member)
                    on_stack.discard(node)
                    if component:
                        components.append(sorted([node, *component]))
    return components


def import_cycles(root: Path, tops: tuple[str, ...]) -> list[str]:
    graph = import_graph(root, tops)
    reports = []
    for component in strongly_connected(graph):
        members = set(component)
        edges = [
            f"    {module} -> {target}: {found.where(root)}"
            for module in component for target, statements in sorted(graph[module].items()) if target in members
            for found in statements
        ]
        reports.append(f"cycle between {', '.join(component)}:\n" + "\n".join(edges))
    return reports


def long_modules(root: Path, tops: tuple[str, ...], limit: int) -> list[str]:
    counts = {path: len(path.read_text(encoding="utf-8").splitlines()) for top in tops for path in sources(root, top)}
    return [f"{path.relative_to(root)}: {count} lines" for path, count in counts.items() if count > limit]


def conftest_imports(root: Path) -> list[str]:
    return [
        found.where(root)
        for path in sources(root, "tests")
        for found in imports(root, path)
        if any(name.rpartition(".")[2] == "conftest" for name in found.candidates())
    ]


def test_stream_never_imports_launchkit() -> None:
    offending = offending_imports(ROOT, "stream", "launchkit")
    assert not offending, "stream/ must not import launchkit (pass a narrow Protocol instead):\n" + "\n".join(offending)


def test_launchkit_imports_loadtests_only_in_the_rehearse_entry_point() -> None:
    offending = offending_imports(ROOT, "launchkit", "loadtests", LOADTESTS_IMPORT_ALLOWED_IN)
    assert not offending, (
        f"launchkit/ may import loadtests only in {sorted(LOADTESTS_IMPORT_ALLOWED_IN)}:\n" + "\n".join(offending)
    )


def test_no_import_cycles() -> None:
    cycles = import_cycles(ROOT, GRAPH_PACKAGES)
    assert not cycles, f"import cycles among {', '.join(GRAPH_PACKAGES)}:\n" + "\n".join(cycles)


def test_no_module_over_the_line_limit() -> None:
    long = long_modules(ROOT, ("launchkit", "stream"), MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(long)


def test_origin_and_edge_are_packages() -> None:
    missing = [f"launchkit/{name}/__init__.py" for name in ("origin", "edge")
               if not (ROOT / "launchkit" / name / "__init__.py").is_file()]
    assert not missing, f"missing: {', '.join(missing)}"


def test_tests_do_not_import_conftest() -> None:
    offending = conftest_imports(ROOT)
    assert not offending, "conftest files are pytest's, not modules to import (use tests/support/):\n" + "\n".join(
        offending
    )
