"""The README's example table says what `results/example` holds: every size of the sweep, each task's mean exact
match over its runs at the final checkpoint, and the verdict `flags.csv` gives its headline row."""
from pathlib import Path

import pandas as pd

from analysis.schema import final_checkpoints

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "results" / "example"


def size_label(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10_000 else f"{n / 1000:.1f}k"


def example_table() -> tuple[list[str], dict[str, list[str]]]:
    """The header's sizes and each task's cells, from the README table whose header names exact match per size."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| task | exact match at "))
    header = lines[start].split("|")[2].strip()
    sizes = header.removeprefix("exact match at ").split(" parameters")[0].split(" / ")
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return sizes, rows


def test_the_readme_example_table_matches_the_committed_example():
    sizes, rows = example_table()
    res = final_checkpoints(pd.read_parquet(EXAMPLE / "results.parquet"))
    em = res[res["metric"] == "exact_match"].groupby(["task", "n_params"])["value"].mean().unstack()
    assert sizes == [size_label(n) for n in em.columns], "the header must list every size of the sweep"
    flags = pd.read_csv(EXAMPLE / "flags.csv")
    headline = flags[flags["metric"] == "exact_match"].set_index("task")["verdict"]
    assert set(rows) == set(em.index)
    for task, cells in rows.items():
        assert cells[1].split(" / ") == [f"{v:.2f}" for v in em.loc[task]], task
        assert cells[2] == headline[task], task
