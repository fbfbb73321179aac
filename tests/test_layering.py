"""The shape of the package, checked on its source: the core never reaches up into the
CLI or the display layer (nor rich/typer); no import cycle, at module level or in functions;
imports between the packages flow one way, as ALLOWED says; a few modules at the root and
none over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "promptlab"
# The edge of the program: these may import anything.
EDGE = ("promptlab.__main__", "promptlab.cli", "promptlab.display", "promptlab.view")
FORBIDDEN = ("promptlab.cli", "promptlab.display", "rich", "typer")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The modules one import statement names (a `from x import y` names x and x.y, since y may be
    a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against this module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports run when the module loads: top level, inside top-level if/try (not TYPE_CHECKING)."""
    found: list[ast.stmt] = []

    def walk(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                found.append(stmt)
            elif isinstance(stmt, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(stmt.test):
                    walk(stmt.body)
                walk(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                walk(stmt.body)
                for handler in stmt.handlers:
                    walk(handler.body)
                walk(stmt.orelse)
                walk(stmt.finalbody)

    walk(tree.body)
    return found


def modules() -> dict[str, tuple[ast.Module, bool]]:
    return {module_name(p): (ast.parse(p.read_text(), str(p)), p.name == "__init__.py")
            for p in sorted(ROOT.rglob("*.py"))}


def test_core_never_imports_the_edge_rich_or_typer():
    bad = []
    for module, (tree, is_package) in modules().items():
        if any(is_under(module, edge) for edge in EDGE):
            continue
        for node in ast.walk(tree):  # every import, function-local ones included
            for name in imported(node, module, is_package):
                if any(is_under(name, f) for f in FORBIDDEN):
                    bad.append(f"{module}:{node.lineno} imports {name}")
    assert not bad, "core modules reach into the CLI/display layer:\n" + "\n".join(sorted(set(bad)))


def test_private_names_stay_in_their_module():
    bad = []
    for module, (tree, is_package) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and imported(node, module, is_package)[0].startswith("promptlab"):
                base = imported(node, module, is_package)[0]
                bad += [f"{module} imports {base}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "private names used outside their module (give them a public home):\n" + "\n".join(bad)


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, (tree, is_package) in mods.items():
        for node in top_level_imports(tree):
            for name in imported(node, module, is_package):
                if name in mods and name != module:
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def parent_package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's `__init__` importing its own submodule, and the submodule importing the package,
    is how Python packages work (importing a.b runs a first); drop the child → parent edge."""
    return {m: {d for d in deps if not is_under(m, d)} for m, deps in graph.items()}


def test_no_import_cycles_at_module_level():
    found = cycles(parent_package_edges(import_graph()))
    assert not found, "module-level import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def all_imports_graph(strict: bool = False) -> dict[str, set[str]]:
    """Every import of every module (module level, in functions, for types only), each name resolved
    to the module it loads: `from promptlab.store import Store` is promptlab.store. `strict`: each
    name to the module whose code it needs — `from promptlab.optimizers import edits` the submodule
    alone, `from promptlab.reports import chunks` the package's own __init__ alone."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, (tree, is_package) in mods.items():
        for node in ast.walk(tree):
            names = imported(node, module, is_package)
            if strict and isinstance(node, ast.ImportFrom):
                names = [f"{names[0]}.{a.name}" if f"{names[0]}.{a.name}" in mods else names[0] for a in node.names]
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def test_no_import_cycles_even_in_functions():
    found = cycles(parent_package_edges(all_imports_graph()))
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_no_module_reads_a_package_that_loads_it():
    """The strict reading: a package's __init__ counts as a module like any other, so a submodule that
    takes names from the __init__ which (even lazily) imports it is a cycle too."""
    found = cycles(all_imports_graph(strict=True))
    assert not found, "import cycles through a package's __init__:\n" + "\n".join(" ↔ ".join(c) for c in found)


# Which room may import which: a package under promptlab/ or a module at its root. Imports flow one
# way, cli → services → evaluation/optimizers/reports → scorers/prompting/providers/store → models;
# within a floor only the pairs listed (optimizers and reports read the evaluation, the evaluation
# reads case files, scorers use providers, the store's records and the sandbox, providers parse
# replies with prompting). The edge (cli, display, view, __main__) may import anything.
# hints.py (the commands messages suggest) reads the store: above it, below what prints messages.
# files.py (atomic writes) and safe_json.py (depth-bounded JSON) are leaves anyone may use.
BASE = {"models", "errors", "config", "redact", "progress", "terminal", "files", "safe_json"}
ALLOWED = {
    "services": {"services", "api", "evaluation", "optimizers", "reports", "cases", "hints",
                 "scorers", "prompting", "providers", "store", "sandbox"} | BASE,
    "api": {"evaluation", "prompting", "providers", "store", "hints"} | BASE,
    "optimizers": {"evaluation", "cases", "scorers", "prompting", "providers", "store", "hints"} | BASE,
    "reports": {"evaluation", "scorers", "prompting", "providers", "store", "hints"} | BASE,
    "evaluation": {"cases", "scorers", "prompting", "providers", "store", "sandbox", "hints"} | BASE,
    "hints": {"store"} | BASE,
    "cases": {"prompting", "providers"} | BASE,
    "scorers": {"providers", "prompting", "store", "sandbox"} | BASE,
    "providers": {"prompting"} | BASE,
    "prompting": BASE,
    "store": BASE,
    "sandbox": BASE,
    "progress": {"models", "errors"},
    "config": {"models", "errors", "redact"},
    "redact": set(), "terminal": set(), "errors": set(), "safe_json": set(), "files": {"errors"},
    "models": {"errors"},
}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "promptlab"


def test_packages_import_only_what_the_matrix_allows():
    bad = []
    for module, deps in all_imports_graph().items():
        here = room(module)
        if any(is_under(module, edge) for edge in EDGE) or here == "promptlab":
            continue
        assert here in ALLOWED, f"{module}: a new room under promptlab/; give it a row in ALLOWED"
        for dep in deps:
            there = room(dep)
            # the root package: __version__, and the public API it imports lazily
            if there not in (here, "promptlab") and there not in ALLOWED[here]:
                bad.append(f"{module} imports {dep} ({here} → {there})")
    assert not bad, "imports against the one-way flow (see ALLOWED):\n" + "\n".join(sorted(bad))


def test_at_most_twelve_modules_at_the_root():
    root = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(root) <= 12, f"{len(root)} modules directly under promptlab/ (at most 12): {root}"


def test_no_module_over_600_lines():
    """Outside the tests: the package, the benchmarks and the examples."""
    files = [p for folder in (ROOT, ROOT.parent / "bench", ROOT.parent / "examples") for p in folder.rglob("*.py")]
    long = [f"{p.relative_to(ROOT.parent)}: {n}" for p in sorted(files)
            if (n := len(p.read_text().splitlines())) > 600]
    assert not long, "modules over 600 lines (split them by what they hold):\n" + "\n".join(long)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


def test_the_import_reader_sees_function_local_and_relative_imports():
    tree = ast.parse("def f():\n    from ..cli import common\n    import rich.table\n")
    names = [n for node in ast.walk(tree) for n in imported(node, "promptlab.x.y", False)]
    assert "promptlab.cli" in names and "promptlab.cli.common" in names and "rich.table" in names
