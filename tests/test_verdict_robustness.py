"""Verdicts on data that break the one-curve model: runs at two levels whose levels vary run to run, sizes exactly
W0/2 apart, and two metrics of one task rising at the same pair of sizes. Each case failed before the share test
(`analysis.share`), the spacing rule and the transition spans."""
import numpy as np
import pandas as pd
import pytest

from analysis.calibrate_verdicts import calibration_grid, synthetic_cell
from analysis.flags import flag_curve, flag_emergence
from analysis.stats import refine_minimum
from analysis.share import share_grid, share_test
from analysis.verdicts import DECADE_TOL, _decide, noise_mode

LN9X2 = 2 * np.log(9)


def _s(t, t0, w):
    return 1 / (1 + np.exp(-LN9X2 * (t - t0) / w))


def two_level_runs(seed, spacing=0.1, runs=6):
    """Sizes 10^2.5-10^5.5; each run on its own floor (0-3%) or its own high level (70-95%), binomial n = 256; the
    share at the high level rises within 0.1-0.3 decades: E[y | N] is a jump."""
    rng = np.random.default_rng(seed)
    tt = np.repeat(np.arange(2.5, 5.5 + 1e-9, spacing), runs)
    w = rng.uniform(0.1, 0.3)
    made = rng.random(tt.size) < _s(tt, rng.uniform(3.5, 4.5), w)
    p = np.where(made, rng.uniform(0.7, 0.95, tt.size), rng.uniform(0, 0.03, tt.size))
    y = rng.binomial(256, p) / 256
    return 10 ** tt, y, np.array([f"r{i}" for i in range(tt.size)], object)


def judge_two_level(seed):
    x, y, runs = two_level_runs(seed)
    return flag_curve(x, y, higher_is_better=True, seeds=runs, n=np.full(y.size, 256), bounds=(0, 1), seed=0)


@pytest.mark.parametrize("seed", [2, 5, 6])
def test_a_two_level_jump_with_levels_that_vary_run_to_run_is_never_called_smooth(seed):
    r = judge_two_level(seed)
    assert r["verdict"] != "smooth", r["evidence"]
    assert r["width"] < 0.5
    assert "runs at two levels" in r["noise"]


def test_two_level_jumps_with_levels_that_vary_are_found():
    verdicts = [judge_two_level(s)["verdict"] for s in (1, 2, 3, 7)]
    assert verdicts == ["emergent"] * 4


def sharp_logistic_quarter_decade(seed):
    """Sizes 0.25 decades apart as whole parameter counts (so log10 gaps are 0.25 up to rounding), 3 runs on one
    sharp logistic (W 0.09-0.4) with noise 0.02."""
    rng = np.random.default_rng(seed)
    tt = np.repeat(3.0 + 0.25 * np.arange(10), 3)
    w = rng.uniform(0.09, 0.4)
    y = 0.02 + 0.9 * _s(tt, rng.uniform(3.9, 4.9), w) + 0.02 * rng.standard_normal(tt.size)
    return np.round(1370 * 10 ** (tt - 3.0)), y, np.array([f"r{i}" for i in range(tt.size)], object)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_calibrated_rejection_is_emergent_whatever_the_spacing(seed):
    x, y, runs = sharp_logistic_quarter_decade(seed)
    r = flag_curve(x, y, higher_is_better=True, seeds=runs, bounds=(0, 1), seed=0)
    assert r["p_value"] <= 0.05 and r["width_hi"] < 0.5
    assert r["verdict"] == "emergent", r["evidence"]


class _Res:
    def __init__(self, p_value, p_smooth, width_lo, width_hi):
        self.p_value, self.p_smooth, self.width_lo, self.width_hi = p_value, p_smooth, width_lo, width_hi


def test_spacing_is_the_reason_only_where_the_test_cannot_reject_and_carries_a_tolerance():
    args = dict(p_flat=0.001, n_low=3, n_high=3, w0=0.5, alpha=0.05, min_side=2, rise="r", width_text="w",
                size_word="sizes", unit="decades")
    unsure = _Res(0.3, 0.4, 0.2, 0.9)
    v, why, reason = _decide(unsure, gap=0.25 + DECADE_TOL / 2, **args)  # 0.25 by rounding is not more than W0/2
    assert v == "inconclusive" and "straddles" in why and reason == "W's interval straddles W0"
    v, why, reason = _decide(unsure, gap=0.31, **args)
    assert v == "inconclusive" and "too far apart" in why and reason == "sizes too far apart"
    v, why, reason = _decide(_Res(0.01, 0.99, 0.0, 0.3), gap=0.31, **args)
    assert v == "emergent" and "rejects a rise W0 wide" in why and reason == "narrower than W0"


def _mirage_table(seed=0):
    """One task, 10 sizes 0.2 decades apart x 12 runs at two levels: token accuracy splits at size 4 and is up from
    size 5, exact match splits at size 5 and is up from size 6. Both rise across the sizes 4-5."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(np.round(10 ** (3 + 0.2 * np.arange(10))).astype(int)):
        for r in range(12):
            em_up, tok_up = i >= 6 or (i == 5 and r < 6), i >= 5 or (i == 4 and r < 6)
            em = rng.binomial(256, rng.uniform(0.7, 0.9) if em_up else rng.uniform(0, 0.02)) / 256
            tok = rng.binomial(256, rng.uniform(0.93, 0.98) if tok_up else rng.uniform(0.5, 0.55)) / 256
            for metric, v in (("exact_match", em), ("token_accuracy", tok)):
                rows.append(dict(sweep="s", run_id=f"m{i}-r{r}", model=f"m{i}", n_params=int(n),
                                 n_params_nonembed=int(n), n_layer=1, d_model=8, seed=r, step=100, tokens=1e6,
                                 flops=6e6 * n, task="add", metric=metric, value=v, stderr=np.nan, n=256,
                                 status="ok"))
    return pd.DataFrame(rows)


def test_rises_across_the_same_adjacent_sizes_are_one_transition_for_the_mirage():
    f = flag_emergence(_mirage_table(), x="n_params").set_index("metric")
    assert f.loc["token_accuracy", "verdict"] == "emergent"
    assert f.loc["exact_match", "verdict"] == "emergent"
    assert f.loc["exact_match", "mirage"] is False or f.loc["exact_match", "mirage"] == False  # noqa: E712
    assert "not a mirage" in f.loc["exact_match", "evidence"]


def test_the_width_estimate_lies_between_grid_points():
    x, y, runs = two_level_runs(0)
    r = judge_two_level(0)
    grid = share_grid(np.unique(np.log10(x)), 0.5)
    assert not np.any(np.isclose(r["width"], grid.widths, rtol=1e-6))
    assert r["width_lo"] <= r["width"] <= r["width_hi"]
    # the parabola's vertex: exact for a parabola sampled off its minimum
    xs = np.linspace(0, 1, 11)
    assert refine_minimum(xs, (xs - 0.537) ** 2) == pytest.approx(0.537)


def test_noise_mode_follows_the_per_run_evidence():
    lv = {"levels": (0.0, 0.9), "separation": 10.0}
    m = np.full(4, 6)
    assert noise_mode({"per_run": "abrupt", **lv}, m, np.array([0, 0, .9, .9])) == "share"
    assert noise_mode({"per_run": "gradual", **lv}, m, np.array([0, .3, .6, .9])) == "mean"
    assert noise_mode({"per_run": "undetermined", **lv}, m, np.array([0, 0, .9, .9])) == "share"
    assert noise_mode({"per_run": "undetermined", **lv}, m, np.array([0, .45, .9, .9])) == "both"
    assert noise_mode({"per_run": "undetermined", "levels": (0.0, 0.9), "separation": 2.0}, m,
                      np.array([0, 0, .9, .9])) == "mean"


def test_the_share_test_is_binomial_in_the_counts_and_its_intervals_hold_the_estimate():
    t = 3 + 0.1 * np.arange(20)
    m = np.full(20, 8.0)
    step = share_test(t, np.where(t > 3.95, 8.0, 0.0), m, seed=0)
    assert step.p_value <= 0.01 and step.width_hi < 0.5
    wide = share_test(t, np.round(8 * _s(t, 4.0, 2.0)), m, seed=0)
    assert wide.p_smooth <= 0.05 and wide.width_lo > 0.5
    for r in (step, wide):
        assert r.width_lo <= r.width <= r.width_hi
        assert 0.0 <= r.floor[0] <= r.ceiling[0] <= 1.0


def test_grid_cells_draw_the_nuisances_they_name():
    d = synthetic_cell(("chance", 0.3, "4-8", "sharp"), 0)
    t = np.log10(d["x"])
    counts = np.unique(t, return_counts=True)[1]
    assert counts.min() >= 4 and counts.max() <= 8 and np.ptp(counts) > 0
    low = d["y"][d["y"] < 0.45]
    assert low.size and low.min() > 0.1  # floors at chance, not at zero
    assert 0.1 <= d["w"] <= 0.3


def test_the_robustness_grid_reports_rates_with_wilson_intervals_and_the_bound():
    r = calibration_grid(4, workers=1, n_boot=60, cells=[("varying", 0.2, "6", "sharp"), ("shared", 0.3, "3", "wide")],
                         bound_sims=8000)
    sharp, wide = r["cells"]
    assert sharp["n"] == 4 and 0 <= sharp["emergent_ci"][0] <= sharp["emergent"] <= sharp["emergent_ci"][1] <= 1
    assert 0 < sharp["bound"] <= sharp["bound_known"] + 0.05
    assert sharp["target"] == min(sharp["bound"], sharp["bound_cell"]) and 0 < sharp["bound_cell"] < 1
    assert "bound" not in wide and isinstance(wide["ok"], bool)


def test_the_headline_family_is_not_diluted_by_secondary_metrics():
    from analysis.verdicts import apply_fdr

    p = [0.02, 0.5] + [0.9] * 20
    rows = pd.DataFrame({"p_value": p, "verdict": ["emergent"] + ["inconclusive"] * 21, "evidence": ["e: x"] * 22})
    fam = ["headline", "headline"] + ["token_accuracy"] * 10 + ["answer_nll"] * 10
    out = apply_fdr(rows, 0.05, families=fam)
    assert out["q_value"].iloc[0] == pytest.approx(0.04)  # 2 tests, not 22
    assert out["verdict"].iloc[0] == "emergent"
    pooled = apply_fdr(rows, 0.05)
    assert pooled["q_value"].iloc[0] == pytest.approx(0.44) and pooled["verdict"].iloc[0] == "inconclusive"
    assert "(headline)" not in pooled["evidence"].iloc[0]


def test_each_task_declares_its_headline_before_any_data():
    from analysis.schema import headline_metrics
    from emergence.tasks import get_task

    df = pd.DataFrame({"task": ["add2"] * 3 + ["lm", "mech", "mech"],
                       "metric": ["token_accuracy", "exact_match", "answer_nll", "loss", "icl_score",
                                  "prefix_matching"]})
    assert headline_metrics(df) == {"add2": "exact_match", "lm": "loss", "mech": "prefix_matching"}
    assert headline_metrics(df, {"add2": "token_accuracy"})["add2"] == "token_accuracy"
    assert headline_metrics(df, {"add2": "brier"})["add2"] == "exact_match"  # declared but not measured
    assert get_task("add3").headline == "exact_match"
    f = flag_emergence(_mirage_table(), x="n_params").set_index("metric")
    assert f.loc["exact_match", "q_family"] == "headline" and f.loc["token_accuracy", "q_family"] == "token_accuracy"


def test_the_report_says_which_family_each_q_belongs_to():
    from analysis.report.sections import _q_text

    assert _q_text(pd.Series({"q_value": 0.012, "q_family": "headline"})).endswith("(headline)")
    assert _q_text(pd.Series({"q_value": 0.3, "q_family": "token_accuracy"})).endswith("(token_accuracy only)")
    assert "(" not in _q_text(pd.Series({"q_value": 0.3, "q_family": ""}))


def test_a_borderline_share_p_value_draws_on_until_it_is_decided():
    """Every run off below 10^4.35, on above, 6 runs at sizes 0.3 decades apart: the null's probability of that
    outcome is about 0.045, so 500 draws decide it by luck; the extension draws on and rejects."""
    t = np.arange(3.0, 6.01, 0.3)
    k, m = np.where(t > 4.4, 6, 0), np.full(t.size, 6)
    fixed = share_test(t, k, m, seed=0, sequential=False)
    drawn = [share_test(t, k, m, seed=s) for s in range(3)]
    assert fixed.n_boot == 500 and fixed.p_value > 0.05
    assert all(r.n_boot > 500 and 0.04 < r.p_value <= 0.05 for r in drawn)


def test_the_bound_for_verdicts_drops_the_outcomes_no_deterministic_test_can_reject():
    from analysis.calibrate_verdicts import recall_bounds

    # 3 runs per size 0.3 decades apart: a perfect step is likelier than 5% under a W0 rise placed in its gap
    sparse = synthetic_cell(("shared", 0.3, "3", "sharp"), 0)
    rand, det = recall_bounds(sparse, seed=0, n_sim=2000, least_favourable=True)
    assert rand > 0.08 and det < 0.03
    # 12 runs per size 0.1 apart: no outcome is that likely, and the two bounds agree
    dense = synthetic_cell(("shared", 0.1, "12", "sharp"), 0)
    rand, det = recall_bounds(dense, seed=0, n_sim=2000, least_favourable=True)
    assert det == pytest.approx(rand, abs=1e-9) and rand > 0.8


def test_the_cells_bound_is_alpha_at_w0_and_no_looser_than_a_test_told_each_location():
    from analysis.calibrate_verdicts import cell_bounds, recall_bounds

    # the cell's mixture made of rises exactly W0 wide: no test beats its level
    at_w0 = cell_bounds(0.2, "6", n_sim=20_000, widths=(0.5, 0.5))
    assert at_w0["rand"] == pytest.approx(0.05, abs=0.015)
    # sharp rises, 6 runs 0.2 decades apart: not knowing where the rise is costs power, so the cell's own bound
    # sits below the mean of its curves' bounds (each told its location)
    cell = cell_bounds(0.2, "6", n_sim=20_000)
    curves = np.mean([recall_bounds(synthetic_cell(("shared", 0.2, "6", "sharp"), i), seed=i, n_sim=2000,
                                    least_favourable=True)[0] for i in range(24)])
    assert 0.45 < cell["rand"] < curves - 0.02
    # dense and many runs: close to certain; sparse and few: no verdict finds the rise
    assert cell_bounds(0.1, "12", n_sim=8000)["rand"] > 0.95
    assert cell_bounds(0.3, "3", n_sim=8000)["det"] < 0.015
    # runs per size drawn (4-8): each design is bounded for itself, as a calibrated p-value is, so the verdict bound
    # keeps out what each design's null puts above alpha (pooled over designs it read 0.43, above the 0.37 of 6 runs)
    drawn = cell_bounds(0.3, "4-8", n_sim=8000)
    assert drawn["det"] < 0.28 < drawn["rand"]


def test_judging_a_saved_grid_again_uses_the_tighter_bound(tmp_path):
    from analysis.calibrate_verdicts import judge_grid, main

    e = {"levels": "shared", "spacing": 0.2, "runs": "6", "shape": "sharp", "n": 200, "emergent": 0.47,
         "smooth": 0.0, "emergent_ci": [0.4, 0.54], "smooth_ci": [0.0, 0.019], "bound": 0.66, "bound_det": 0.66,
         "bound_known": 0.7}
    r = judge_grid({"cells": [dict(e)], "per_cell": 200, "n_boot": 500, "workers": 2, "wall_s": 1.0}, n_sim=20_000)
    c = r["cells"][0]
    # 0.47 < 0.8 x 0.66 (each curve's location known), but the cell's own bound is lower, and met
    assert c["target"] == c["bound_cell"] < 0.6 and c["ok"] and r["all_met"]
    bad = tmp_path / "grid.json"
    bad.write_text("{}")
    assert main(["--grid", "--judge", str(bad)]) == 2
