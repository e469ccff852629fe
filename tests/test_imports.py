"""Architecture rules of analysis/, read from the source: no import loops between its modules (function-level
imports included: a loop hidden inside a function is still a loop), and never torch or the emergence package."""
import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in a file (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "analysis":  # from analysis import jumps, schema
                out |= {f"analysis.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    mods = {f"analysis.{p.stem}": p for p in ANALYSIS.glob("*.py") if p.stem != "__init__"}
    return {m: {i for i in imports_of(p) if i in mods and i != m} for m, p in mods.items()}


def test_analysis_has_no_import_loops():
    g = graph()
    state: dict[str, int] = {}
    loops = []

    def visit(m, path):
        state[m] = 1
        for n in sorted(g[m]):
            if state.get(n) == 1:
                loops.append(path[path.index(n):] + [n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not loops, f"import loops in analysis/: {loops}"
    # the modules the loops used to run through
    assert "analysis.fit" not in g["analysis.laws"] and "analysis.flags" not in g["analysis.views"]


def test_analysis_never_imports_torch_or_emergence():
    for p in ANALYSIS.glob("*.py"):
        bad = {i for i in imports_of(p) if i.split(".")[0] in ("torch", "emergence")}
        assert not bad, f"{p.name} imports {bad}"
