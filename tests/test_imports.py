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


def module_name(p: Path) -> str:
    parts = p.relative_to(ANALYSIS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    """Module -> the analysis modules it imports, subpackages included (analysis.report.*)."""
    mods = {module_name(p): p for p in ANALYSIS.rglob("*.py") if module_name(p) != "analysis"}
    return {m: {i for i in imports_of(p) if i in mods and i != m and not m.startswith(i + ".")}
            for m, p in mods.items()}


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
    for p in ANALYSIS.rglob("*.py"):
        bad = {i for i in imports_of(p) if i.split(".")[0] in ("torch", "emergence")}
        assert not bad, f"{p.name} imports {bad}"


ROOT = ANALYSIS.parent


def _lint(config: Path):
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_import_contracts_hold():
    """The contracts in pyproject.toml ([tool.importlinter]): analysis never imports torch, emergence, wandb or
    hydra; the model never imports training; tasks never import the model; tracking never imports analysis; and
    emergence is layered (a module imports only the layers below it, so no import loop runs through the package)."""
    r = _lint(ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 kept, 0 broken" in r.stdout


def test_import_linter_sees_a_broken_contract(tmp_path):
    """The linter reads the real import graph: a rule the code breaks (the CLI imports the sweep) is reported."""
    cfg = tmp_path / "broken.toml"
    cfg.write_text('[tool.importlinter]\nroot_packages = ["emergence", "analysis"]\n\n'
                   '[[tool.importlinter.contracts]]\nname = "cli without sweep"\ntype = "forbidden"\n'
                   'source_modules = ["emergence.cli"]\nforbidden_modules = ["emergence.sweep"]\n')
    r = _lint(cfg)
    assert r.returncode != 0 and "BROKEN" in r.stdout


def test_no_import_error_guard_around_our_own_modules():
    """A missing module of our own is a bug to see, not a feature to degrade: no `except ImportError` around an
    import of emergence or analysis."""
    bad = []
    for p in sorted(ROOT.glob("emergence/**/*.py")) + sorted(ANALYSIS.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.Try):
                continue
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if not caught & {"ImportError", "ModuleNotFoundError"}:
                continue
            for inner in (n for stmt in node.body for n in ast.walk(stmt)):
                mods = ([a.name for a in inner.names] if isinstance(inner, ast.Import)
                        else [inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
                if any(m.split(".")[0] in ("emergence", "analysis") for m in mods):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"ImportError guards around our own modules: {bad}"
