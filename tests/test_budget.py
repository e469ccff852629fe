"""Capacity or budget: the share of runs that acquired an ability at each size, under two token budgets."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.budget import COLUMNS, BudgetOrderError, budget_shift, emergent_budget
from analysis.perrun import level_cut

N = 256


def table(acquired: dict, tokens: float, seed: int = 0) -> pd.DataFrame:
    """Runs of sizes {n_params: number that acquired 'add' of 6}; acquired runs at 0.85, the others at 0.02; a
    continuous metric beside it that the check leaves out."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, k in acquired.items():
        for s in range(6):
            v = rng.binomial(N, 0.85 if s < k else 0.02) / N
            base = dict(sweep="b", run_id=f"n{n}-t{tokens:g}-s{s}", model=f"m{n}", n_params=n, n_params_nonembed=n,
                        n_layer=1, d_model=8, seed=s, tokens=tokens, flops=6 * n * tokens, n=N, status="ok",
                        task="add")
            rows.append({**base, "step": 10, "tokens": tokens / 2, "metric": "exact_match", "value": 0.0,
                         "stderr": 0.0})  # an earlier checkpoint: only the last one counts
            rows.append({**base, "step": 20, "metric": "exact_match", "value": v, "stderr": np.sqrt(v * (1 - v) / N)})
            rows.append({**base, "step": 20, "metric": "token_accuracy", "value": 0.5 + v / 2, "stderr": 0.01})
    return pd.DataFrame(rows)


def test_level_cut_splits_two_groups():
    assert 0.1 < level_cut([0.0, 0.01, 0.02, 0.8, 0.9]) < 0.8
    assert level_cut([1.0, 2.0, 10.0, 11.0]) == pytest.approx(6.0)


def test_a_transition_that_moves_with_the_budget_is_called_so():
    base = table({1000: 0, 1500: 1, 2000: 5, 3000: 6}, 2e6)
    more = table({1500: 6, 2000: 6}, 4e6, seed=1)
    out = budget_shift(base, more)
    assert list(out.columns) == COLUMNS and list(out["n_params"]) == [1500, 2000]
    assert set(out["metric"]) == {"exact_match"}  # continuous metrics are not counted in runs
    r = out.set_index("n_params").loc[1500]
    assert (r["acquired_base"], r["runs_base"], r["acquired_more"], r["runs_more"]) == (1, 6, 6, 6)
    assert r["tokens_base"] == 2e6 and r["tokens_more"] == 4e6
    assert r["p_value"] == pytest.approx(0.0152, abs=1e-3)  # Fisher's exact test of 1/6 against 6/6
    assert bool(r["moves"]) and "moves with the budget" in r["evidence"]
    assert 0 <= r["share_base_lo"] <= 1 / 6 <= r["share_base_hi"] <= 1
    r = out.set_index("n_params").loc[2000]
    assert not r["moves"] and "could be anywhere in" in r["evidence"]  # 5/6 against 6/6: no claim either way


def test_no_shared_size_is_an_empty_table_and_a_clear_cli_error(tmp_path):
    base = table({1000: 0, 2000: 6}, 2e6)
    assert budget_shift(base, table({5000: 6}, 4e6)).empty
    base.to_parquet(tmp_path / "a.parquet")
    table({5000: 6}, 4e6).to_parquet(tmp_path / "b.parquet")
    p = subprocess.run([sys.executable, "-m", "emergence", "budget", str(tmp_path / "a.parquet"),
                        str(tmp_path / "b.parquet")], capture_output=True, text=True)
    assert p.returncode == 2 and "share no size" in p.stderr and not (tmp_path / "budget.csv").exists()
    table({2000: 3}, 4e6).to_parquet(tmp_path / "b.parquet")
    p = subprocess.run([sys.executable, "-m", "emergence", "budget", str(tmp_path / "a.parquet"),
                        str(tmp_path / "b.parquet")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    written = pd.read_csv(tmp_path / "budget.csv")
    assert len(written) == 1 and written["acquired_more"].iloc[0] == 3 and "3 of 6" in p.stdout


def test_report_shows_the_budget_sentences_escaped(tmp_path):
    from analysis.report import write_report

    base = table({1000: 0, 1500: 1, 2000: 5, 3000: 6}, 2e6)
    base.to_parquet(tmp_path / "results.parquet")
    out = budget_shift(base, table({1500: 6}, 4e6, seed=1))
    out.loc[0, "evidence"] = out.loc[0, "evidence"] + " <b>not bold</b>"
    out.to_csv(tmp_path / "budget.csv", index=False)
    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    for text in (html, md):
        assert "Capacity or budget?" in text and "1 of 6 runs acquired add exact" in text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html and "<b>not bold" not in html


def test_a_base_sweep_that_never_acquires_it_is_still_compared():
    base = table({1000: 0, 1500: 0}, 2e6)  # every base run on the floor: no spread under the base budget alone
    out = budget_shift(base, table({1500: 6}, 4e6, seed=1))
    assert len(out) == 1
    r = out.iloc[0]
    assert (r["acquired_base"], r["acquired_more"]) == (0, 6) and bool(r["moves"])
    assert 0.02 < r["cut"] < 0.85


def test_the_longer_sweep_given_first_is_refused(tmp_path):
    base, more = table({1500: 1}, 2e6), table({1500: 6}, 4e6, seed=1)
    with pytest.raises(BudgetOrderError, match="no more tokens"):
        budget_shift(more, base)
    with pytest.raises(BudgetOrderError):
        budget_shift(base, base)
    more.to_parquet(tmp_path / "more.parquet")
    base.to_parquet(tmp_path / "base.parquet")
    p = subprocess.run([sys.executable, "-m", "emergence", "budget", str(tmp_path / "more.parquet"),
                        str(tmp_path / "base.parquet")], capture_output=True, text=True)
    assert p.returncode == 2 and "base sweep first" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "budget.csv").exists()


def test_each_emergent_row_is_told_whether_it_moved_with_the_budget():
    base = table({1000: 0, 1500: 1, 2000: 5, 3000: 6}, 2e6)
    out = budget_shift(base, table({1500: 6, 2000: 6}, 4e6, seed=1))
    said = emergent_budget(out, "add", "exact_match")
    assert said.startswith("moves with the budget: 1/6 to 6/6 at 1.5k") and "2000" not in said
    assert emergent_budget(out, "add", "token_accuracy") == "not checked"
    assert emergent_budget(None, "add", "exact_match") == "not checked"
    held = budget_shift(base, table({3000: 6}, 4e6, seed=1))
    assert emergent_budget(held, "add", "exact_match").startswith("no shift detected: 6/6 to 6/6 at 3k")


def test_the_report_says_for_each_emergent_row_whether_it_moved(tmp_path):
    from analysis import flag_emergence
    from analysis.report import write_report

    base = table({1000: 0, 1500: 1, 2000: 5, 3000: 6}, 2e6)
    base.to_parquet(tmp_path / "results.parquet")
    flags = flag_emergence(base, x="n_params")
    flags.loc[(flags["metric"] == "exact_match"), "verdict"] = "emergent"  # the rendering, not the verdict, is tested
    flags.to_csv(tmp_path / "flags.csv", index=False)
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "with more tokens" not in md.split("## ")[0] and "Capacity or budget:** not checked (train" in md
    budget_shift(base, table({1500: 6}, 4e6, seed=1)).to_csv(tmp_path / "budget.csv", index=False)
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    first = md.split("## ")[0]
    assert "with more tokens" in first and "| moves with the budget |" in first
    assert "Capacity or budget:** moves with the budget: 1/6 to 6/6 at 1.5k (2M to 4M tokens" in md
