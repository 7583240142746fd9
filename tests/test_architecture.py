"""The house rules of docs/architecture.md, checked on the source: imports follow the flow
downward (no cycles, no package importing one above it), no private name is imported from
another package, every module stays small, and the top of the package stays short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "modelproof"

# Lowest first: a package may import only packages at its own position or before it.
LAYERS = ("util", "data", "models", "keys", "suspects", "protections", "verification", "attacks",
          "references", "serving", "experiments", "cli")
MAX_LINES = 350
MAX_TOP_ENTRIES = 13


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


MODULES = _modules()


def _absolute(module: str, package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every modelproof import, lazy ones included."""
    path, package = MODULES[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, package, node)
            if target == "modelproof" or target.startswith("modelproof."):
                for alias in node.names:
                    found.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("modelproof")]
    return found


def _edges(module: str) -> set[str]:
    """Modules whose code runs when ``module``'s imports run (package __init__s included)."""
    ancestors = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
    out = set()
    for target, name, _ in _imports(module):
        full = f"{target}.{name}" if f"{target}.{name}" in MODULES else target
        parts = full.split(".")
        out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - ancestors
    return {m for m in out if m in MODULES and m != module}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_import_graph_has_no_cycles():
    graph = {m: _edges(m) for m in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_follow_the_flow_downward():
    bad = []
    for module in MODULES:
        own = _layer(module)
        for target, name, line in _imports(module):
            theirs = _layer(f"{target}.{name}" if f"{target}.{name}" in MODULES else target)
            if own is not None and theirs is not None and theirs > own:
                bad.append(f"{module}:{line} imports {target} ({LAYERS[theirs]} is above {LAYERS[own]})")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_from_another_package():
    bad = []
    for module, (_, package) in MODULES.items():
        home = module if package else module.rsplit(".", 1)[0]
        for target, name, line in _imports(module):
            source = target if target in MODULES and MODULES[target][1] else target.rsplit(".", 1)[0]
            if name.startswith("_") and not name.startswith("__") and source != home:
                bad.append(f"{module}:{line} imports {target}.{name}")
    assert not bad, "\n".join(bad)


def test_modules_stay_small_and_the_top_stays_short():
    big = [f"{m}: {n} lines" for m, (p, _) in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not big, "modules over the limit:\n" + "\n".join(big)
    top = sorted(p.name for p in ROOT.iterdir() if p.name != "__pycache__" and not p.name.startswith("."))
    assert len(top) <= MAX_TOP_ENTRIES, top


@pytest.mark.parametrize("package", LAYERS)
def test_every_package_has_a_docstring(package):
    assert ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())), package
