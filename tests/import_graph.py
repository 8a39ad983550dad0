"""The moebench import graph read from source (shared by the layout and DVC tests)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_path(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported(path: Path) -> set[str]:
    """moebench modules named by the import statements of one file (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("moebench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moebench"):
            subs = {f"{node.module}.{a.name}" for a in node.names
                    if module_path(f"{node.module}.{a.name}")}
            # `from pkg import submodule` imports the submodule (pkg/__init__ runs as its
            # parent, see closure()); any other name is taken from pkg itself
            found |= subs if len(subs) == len(node.names) else subs | {node.module}
    return found


def closure(names: set[str]) -> set[Path]:
    """Source files of ``names``, their parent packages and everything they import."""
    todo, files = list(names), set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            path = module_path(".".join(parts[:i]))
            if path is not None and path not in files:
                files.add(path)
                todo.extend(imported(path))
    return files


def modules() -> dict[str, Path]:
    """{dotted module name: file} of every module under src/moebench."""
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return out


def graph() -> dict[str, set[str]]:
    """{module: modules it imports (anywhere in its source)}."""
    mods = modules()
    out = {}
    for name, path in mods.items():
        deps = set()
        for m in imported(path):
            parts = m.split(".")
            while parts and ".".join(parts) not in mods:
                parts.pop()
            if parts and ".".join(parts) != name:
                deps.add(".".join(parts))
        out[name] = deps
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found
