"""Stability of verdicts: disjoint sets of runs per size, the modal verdict with its Wilson interval, the CLI verb
and the report's section."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.stats import wilson
from analysis.stability import COLUMNS, modal, split_runs, stability

N = 256


def pool(runs_per_size=12, sizes_t=(3.0, 3.2, 3.4, 3.6, 3.8, 4.0, 4.2, 4.4, 4.6), seed=0):
    """A results table with a pool of runs per size; each run acquires 'add' (two levels) with a share rising
    sharply around 10^3.8 and 'sort' rises smoothly for every run."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, t in enumerate(sizes_t):
        for s in range(runs_per_size):
            made = rng.random() < 1 / (1 + np.exp(-2 * np.log(9) * (t - 3.8) / 0.1))
            rid = f"m{i}-s{s}"
            base = dict(sweep="p", run_id=rid, model=f"m{i}", n_params=int(10 ** t), n_params_nonembed=int(10 ** t),
                        n_layer=1, d_model=8, seed=s, step=100, tokens=1e6, flops=6e6 * 10 ** t, n=N, status="ok")
            for task, p in (("add", 0.85 if made else 0.02), ("sort", 0.1 + 0.7 * (t - 3.0) / 1.6)):
                v = rng.binomial(N, p) / N
                rows.append({**base, "task": task, "metric": "exact_match", "value": v,
                             "stderr": np.sqrt(v * (1 - v) / N)})
    return pd.DataFrame(rows)


def test_wilson_interval_matches_known_values():
    # Wilson 1927 / Agresti & Coull 1998: 5 of 5 -> [0.566, 1.0]; 0 of 10 -> [0, 0.278]; 9 of 10 -> [0.596, 0.982]
    np.testing.assert_allclose(wilson(5, 5), (0.5655, 1.0), atol=1e-3)
    np.testing.assert_allclose(wilson(0, 10), (0.0, 0.2775), atol=1e-3)
    np.testing.assert_allclose(wilson(9, 10), (0.5958, 0.9821), atol=1e-3)


def test_modal_verdict_and_ties():
    assert modal(["smooth", "emergent", "emergent"])[:2] == ("emergent", pytest.approx(2 / 3))
    assert modal(["smooth", "inconclusive"])[0] == "smooth"  # a tie goes to the verdict listed first
    m, share, lo, hi = modal(["flat"] * 5)
    assert m == "flat" and share == 1.0 and lo == pytest.approx(0.5655, abs=1e-3) and hi == 1.0


def test_sets_are_disjoint_and_hold_the_same_number_of_runs_of_every_size():
    df = pool(runs_per_size=12)
    sets = split_runs(df, 4, seed=1)
    assert len(sets) == 3
    flat = [r for s in sets for r in s]
    assert len(flat) == len(set(flat)) == 3 * 4 * 9
    size_of = df.drop_duplicates("run_id").set_index("run_id")["n_params"]
    for s in sets:
        assert size_of[s].value_counts().eq(4).all() and size_of[s].nunique() == 9
    assert split_runs(df, 4, seed=1) == sets and split_runs(df, 4, seed=2) != sets  # seeded
    with pytest.raises(ValueError, match="smallest pool has 12"):
        split_runs(df, 7)
    with pytest.raises(ValueError, match="runs_per_size"):
        split_runs(df, 0)


def test_stability_table_counts_each_replicates_verdict():
    df = pool(runs_per_size=12)
    st = stability(df, 6, n_boot=100)
    assert list(st.columns) == COLUMNS and len(st) == 2
    for r in st.itertuples():
        v = r.verdicts.split(";")
        assert len(v) == r.replicates == 2
        assert r.n_emergent + r.n_smooth + r.n_flat + r.n_inconclusive == 2
        assert r.modal_share == max(v.count(k) for k in set(v)) / 2
        assert 0 <= r.modal_lo <= r.modal_share <= r.modal_hi <= 1
    assert st.set_index("task").loc["sort", "modal"] == "smooth"


def test_stability_cli_writes_the_table_and_refuses_a_pool_too_small(tmp_path):
    df = pool(runs_per_size=4, sizes_t=(3.0, 3.4, 3.8, 4.2, 4.6))
    path = tmp_path / "results.parquet"
    df.to_parquet(path)
    p = subprocess.run([sys.executable, "-m", "emergence", "stability", str(path), "--runs-per-size", "2"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    st = pd.read_csv(tmp_path / "stability.csv")
    assert len(st) == 2 and (st["replicates"] == 2).all()
    p = subprocess.run([sys.executable, "-m", "emergence", "stability", str(path), "--runs-per-size", "1",
                        "--replicates", "3"], capture_output=True, text=True)
    assert p.returncode == 0 and f"kept the previous stability.csv as {tmp_path / 'stability.previous.csv'}" in p.stdout
    assert pd.read_csv(tmp_path / "stability.previous.csv").equals(st)  # the earlier table, not lost
    assert (pd.read_csv(tmp_path / "stability.csv")["replicates"] == 3).all()
    bad = subprocess.run([sys.executable, "-m", "emergence", "stability", str(path), "--runs-per-size", "3"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "smallest pool" in bad.stderr


def test_report_shows_the_stability_section(tmp_path):
    from analysis.report import write_report

    df = pool(runs_per_size=4, sizes_t=(3.0, 3.4, 3.8, 4.2, 4.6))
    df.to_parquet(tmp_path / "results.parquet")
    pd.DataFrame([{"task": "add", "metric": "exact_match", "replicates": 5, "runs_per_size": 6,
                   "verdicts": "emergent;emergent;inconclusive;emergent;emergent", "modal": "emergent",
                   "modal_share": 0.8, "modal_lo": 0.376, "modal_hi": 0.964, "n_emergent": 4, "n_smooth": 0,
                   "n_flat": 0, "n_inconclusive": 1}]).to_csv(tmp_path / "stability.csv", index=False)
    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    for text in (html, md):
        assert "Stability of the verdicts" in text and "0.376" in text and "0.964" in text
        assert "5 disjoint sets of 6 runs per size" in text
