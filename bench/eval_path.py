"""The rooms one eval request passes through in batch mode: `promptlab eval --batch` on one case
against the loopback fake server, with a profiler noting which promptlab module holds control (the
innermost promptlab frame) each time it changes. Issue 23 counts these before and after the
re-layout.

    python bench/eval_path.py [--all] [--show]

Counted over the core (cli/, display/, view/, __main__ and terminal are the edge and left out; so
are the leaves every room uses: models, config, errors, redact, progress, files, safe_json, unless --all):
- rooms: the distinct modules passed through; floors: the distinct floors among them, a module's
  floor being 0 without promptlab imports, else one above the highest it imports (every import:
  module level, in functions, for types; a cycle shares one floor);
- moves: changes of room (calls and returns alike); back-up moves: those to a higher floor, of
  which calls up (a lower room calling into a higher one: callbacks) are the ones no return
  explains; returns to a room: moves into a room already visited;
- passages: the distinct (from, to) pairs among the moves, and how many of them go up.
With --packages a room is a package (store/, evaluation/, …; a root module stays a room of its own).
Run it from a checkout's root; it profiles that checkout's code.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(os.getcwd()).resolve()
PACKAGE = ROOT / "promptlab"
sys.path.insert(0, str(ROOT))

EDGE = ("promptlab.cli", "promptlab.display", "promptlab.view", "promptlab.__main__", "promptlab.terminal")
LEAVES = ("promptlab.models", "promptlab.config", "promptlab.errors", "promptlab.redact", "promptlab.progress",
          "promptlab.files", "promptlab.safe_json")


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):
                    graph[module].add(name)
    return graph


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Longest import chain below each module; the members of a cycle share their floor."""
    reach = {m: set() for m in graph}
    for m in graph:  # transitive closure (the graph is small)
        todo = list(graph[m])
        while todo:
            d = todo.pop()
            if d not in reach[m]:
                reach[m].add(d)
                todo += graph[d]
    scc = {m: frozenset({m} | {d for d in reach[m] if m in reach[d]}) for m in graph}
    memo: dict[frozenset, int] = {}

    def floor(group: frozenset) -> int:
        if group not in memo:
            below = {scc[d] for m in group for d in graph[m]} - {group}
            memo[group] = 1 + max((floor(g) for g in below), default=-1)
        return memo[group]

    return {m: floor(scc[m]) for m in graph}


def trace(counted) -> list[tuple[str, str]]:
    """The counted promptlab modules holding control during one `eval --batch`, in turn, each with
    the event that moved control there (call or return)."""
    from tests.fake_openai import spawn_server

    server = spawn_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            Path("promptlab.toml").write_text(f'[defaults]\nmodel = "fake"\n\n[models.fake]\n'
                                              f'model = "openai/fake"\napi_base = "{server.base_url}"\n')
            os.environ["PROMPTLAB_CONFIG"] = str(Path(tmp) / "promptlab.toml")
            os.environ.pop("PROMPTLAB_DB", None)
            Path("cases.jsonl").write_text('{"text": "great", "label": "positive"}\n')
            server.configure(rules=[["great", "positive"]])
            from promptlab.cli import main

            def cli(*args: str) -> None:
                try:
                    main(list(args))
                except SystemExit as exc:
                    if exc.code:
                        raise RuntimeError(f"promptlab {' '.join(args)} exited {exc.code}") from None

            for args in (("project", "add", "demo"),
                         ("signature", "add", "sentiment", "-i", "text", "-o", "label:enum:positive,negative"),
                         ("case", "import", "cases.jsonl"),
                         ("prompt", "add", "p", "--signature", "sentiment", "--template", "Review: {{ text }}")):
                cli(*args)
            cli("eval", "--prompt", "p", "--batch", "--name", "warm", "--json")  # imports, litellm's first use
            path: list[str] = []
            modules: dict[str, str | None] = {}

            def room(frame) -> str | None:
                while frame is not None:
                    filename = frame.f_code.co_filename
                    if filename not in modules:
                        p = Path(filename)
                        inside = p.is_absolute() and PACKAGE in p.parents
                        modules[filename] = module_of(p) if inside else None
                    name = modules[filename]
                    if name is not None and counted(name):
                        return name
                    frame = frame.f_back
                return None

            def profile(frame, event, arg) -> None:
                if event in ("call", "return"):
                    here = room(frame if event == "call" else frame.f_back)
                    if here is not None and (not path or path[-1][0] != here):
                        path.append((here, event))

            sys.setprofile(profile)
            try:
                cli("eval", "--prompt", "p", "--batch", "--name", "traced", "--json", "--no-cache")
            finally:
                sys.setprofile(None)
            return path
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="count the shared leaves too")
    parser.add_argument("--show", action="store_true", help="print the path, one move a line")
    parser.add_argument("--packages", action="store_true", help="a room is a package, not a module")
    args = parser.parse_args()

    def counted(name: str) -> bool:
        return not any(name == e or name.startswith(e + ".") for e in EDGE) and (args.all or name not in LEAVES)

    graph = import_graph()
    traced = trace(counted)
    if args.packages:  # promptlab.store.runs → promptlab.store; the root modules stay themselves
        pkgs = {m for m in graph if any(p.name == "__init__.py" and module_of(p) == m for p in PACKAGE.rglob("__init__.py"))}

        def group(m: str) -> str:
            parts = m.split(".")
            return ".".join(parts[:2]) if len(parts) > 2 or m in pkgs and m != "promptlab" else m

        merged: dict[str, set[str]] = {}
        for m, deps in graph.items():
            merged.setdefault(group(m), set()).update(group(d) for d in deps)
        graph = {m: deps - {m} for m, deps in merged.items()}
        traced = [(group(m), e) for m, e in traced]
        traced = [step for i, step in enumerate(traced) if i == 0 or traced[i - 1][0] != step[0]]
    level = floors(graph)
    path = [m for m, _ in traced]
    moves = [(a, b, event) for (a, _), (b, event) in zip(traced, traced[1:])]
    seen, returns = {path[0]}, 0
    for _, b, _ in moves:
        returns += b in seen
        seen.add(b)
    up = [(a, b, e) for a, b, e in moves if level[b] > level[a]]
    passages = {(a, b) for a, b, _ in moves}
    if args.show:
        for a, b, event in moves:
            print(f"{a} ({level[a]}) -> {b} ({level[b]}) {event}{'  up' if level[b] > level[a] else ''}")
    print(f"rooms {len(set(path))}, floors {len({level[m] for m in path})}, moves {len(moves)}, "
          f"back-up moves {len(up)} (calls up {sum(e == 'call' for _, _, e in up)}), "
          f"returns to a room {returns}; passages {len(passages)}, "
          f"of them up {sum(level[b] > level[a] for a, b in passages)}")
    print("rooms by floor: " + "; ".join(
        f"{f}: {', '.join(sorted(m.removeprefix('promptlab.') for m in set(path) if level[m] == f))}"
        for f in sorted({level[m] for m in path})))
    calls_up = sorted({(a, b) for a, b, e in up if e == "call"})
    if calls_up:
        print("calls up: " + "; ".join(f"{a.removeprefix('promptlab.')} → {b.removeprefix('promptlab.')}"
                                        for a, b in calls_up))

if __name__ == "__main__":
    main()
