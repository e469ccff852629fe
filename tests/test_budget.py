"""Capacity or budget: the share of runs that acquired an ability at each size, under two token budgets."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.budget import COLUMNS, budget_shift
from analysis.jumps import level_cut

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
