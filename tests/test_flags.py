"""The emergence verdict on curves with a known truth: jumps narrower than W0 are found where they are, rises wider
than W0 are called smooth with evidence, the tests hold their size under the null, every interval stays inside its
metric's bounds, and the results-table wrapper handles runs, checkpoints, failed runs, q-values, mirage and loss."""
import numpy as np
import pandas as pd
import pytest

from analysis.flags import (EXTRA_COLUMNS, FLAG_COLUMNS, apply_fdr, breakthroughness, flag_along, flag_curve,
                            flag_emergence)
from analysis.jumps import DEFINITION, W0
from analysis.perrun import loss_alignment
from analysis.stats import benjamini_hochberg, wilson

N = 256
LN9X2 = 2 * np.log(9.0)


def share(t, t0, w):
    return 1 / (1 + np.exp(-LN9X2 * (t - t0) / w))


def runs_at_two_levels(sizes_t, w, t0, runs=6, lo=0.02, hi=0.85, seed=0):
    """Every run either stays on the floor or lands at the ceiling; the share that lands rises with a 10-90% width
    of w decades. Returns x, y, run labels, n (binomial noise from N examples)."""
    rng = np.random.default_rng(seed)
    t = np.repeat(sizes_t, runs)
    made = rng.random(t.size) < share(t, t0, w)
    y = rng.binomial(N, np.where(made, hi, lo)) / N
    labels = np.array([f"{i}-{j}" for i in range(len(sizes_t)) for j in range(runs)], dtype=object)
    return 10 ** t, y, labels, np.full(y.size, N)


def runs_on_one_curve(sizes_t, w, t0, runs=6, lo=0.02, hi=0.85, seed=0):
    """Every run on the same logistic of width w, with binomial noise."""
    rng = np.random.default_rng(seed)
    t = np.repeat(sizes_t, runs)
    y = rng.binomial(N, lo + (hi - lo) * share(t, t0, w)) / N
    labels = np.array([f"{i}-{j}" for i in range(len(sizes_t)) for j in range(runs)], dtype=object)
    return 10 ** t, y, labels, np.full(y.size, N)


SIZES_T = 3.0 + 0.2 * np.arange(14)


def judge(x, y, labels, n, **kw):
    return flag_curve(x, y, higher_is_better=True, seeds=labels, n=n, bounds=(0, 1), x_name="n_params", **kw)


# ---------------------------------------------------------------------------------------------------- helpers
def test_breakthroughness_is_the_published_formula_without_a_floor():
    y = np.array([0.0, 0.1, 0.2, 0.9, 1.0])  # steps .1 .1 .7 .1: root median square step .1, range 1
    assert breakthroughness(y) == pytest.approx(10.0)
    assert breakthroughness(y[::-1]) == pytest.approx(-10.0)
    assert breakthroughness(np.array([0.0, 0.0, 0.0, 0.0, 0.6])) == np.inf  # zero median step: no guard
    assert breakthroughness(np.full(5, 0.3)) == 0.0


def test_benjamini_hochberg_and_wilson_match_hand_computations():
    q = benjamini_hochberg([0.01, 0.04, 0.03, np.nan, 0.5])
    # sorted p .01 .03 .04 .5 (m = 4): .04, .06, .0533, .5 -> monotone from the top: .04, .0533, .0533, .5
    np.testing.assert_allclose(q[[0, 2, 1, 4]], [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert np.isnan(q[3])
    lo, hi = wilson(3, 10)
    assert lo == pytest.approx(0.1078, abs=1e-3) and hi == pytest.approx(0.6032, abs=1e-3)


def test_loss_alignment_finds_the_separating_loss():
    acquired = np.array([True, True, False, False, True, False])
    loss = np.array([0.80, 0.85, 1.2, 1.1, 0.9, 1.3])
    a = loss_alignment(acquired, loss)
    assert a["loss_separates"] is True and a["loss_at_jump"] == pytest.approx(1.0)
    b = loss_alignment(acquired, np.array([0.80, 1.25, 1.2, 1.1, 0.9, 1.3]))
    assert b["loss_separates"] is False and b["errors"] == 1
    assert loss_alignment(np.ones(4, bool), np.arange(4.0))["loss_separates"] is None


def test_definition_names_w0_and_the_verdicts():
    text = DEFINITION.format(w0=W0)
    assert "W0 = 0.5" in text and "10% to 90%" in text
    for word in ("emergent", "smooth", "inconclusive", "flat", "per_run"):
        assert word in text


# ----------------------------------------------------------------------------------------------- across sizes
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_at_two_levels_with_a_sharp_share_are_emergent_and_abrupt(seed):
    x, y, labels, n = runs_at_two_levels(SIZES_T, 0.1, 4.3, seed=seed)
    r = judge(x, y, labels, n, seed=seed)
    assert r["verdict"] == "emergent", r["evidence"]
    assert r["width_hi"] < W0 and r["p_value"] <= 0.05
    assert r["jump_lo"] <= 10 ** 4.3 <= r["jump_hi"], r["evidence"]
    assert 0.0 <= r["floor"] <= r["ceiling"] <= 1.0
    assert r["n_sizes"] == 14 and r["n_runs"] == 84
    assert r["per_run"] in ("abrupt", "undetermined")
    assert r["share_by_size"].split()[0] == "0/6" and r["share_by_size"].split()[-1] == "6/6"


def test_a_trivially_obvious_step_between_adjacent_sizes_is_emergent():
    """4 runs per size that each step from 0.01 to 0.91 between two adjacent sizes (0.2 decades apart)."""
    rng = np.random.default_rng(11)
    t = np.repeat(SIZES_T[:10], 4)
    y = rng.binomial(N, np.where(t > 4.05, 0.91, 0.01)) / N
    labels = np.array([f"{i}" for i in range(t.size)], dtype=object)
    r = judge(10 ** t, y, labels, np.full(t.size, N))
    assert r["verdict"] == "emergent", r["evidence"]
    assert r["jump_lo"] <= 10 ** 4.1 <= r["jump_hi"] and r["jump_hi"] / r["jump_lo"] < 10 ** 0.5
    assert r["step_max"] > r["step_allowed"] and r["step_p"] < 0.05  # the model-free cross-check agrees


def test_one_level_rise_wider_than_w0_is_smooth_with_its_width_inside_the_interval():
    x, y, labels, n = runs_on_one_curve(SIZES_T, 1.5, 4.3, seed=4)
    r = judge(x, y, labels, n)
    assert r["verdict"] == "smooth", r["evidence"]
    assert r["width_lo"] > W0 and r["width_lo"] <= 1.5 <= r["width_hi"]
    assert r["p_smooth"] <= 0.05 and r["p_value"] > 0.5
    assert r["per_run"] == "gradual", r["evidence"]


def test_runs_at_two_levels_with_a_slow_share_are_not_emergent_but_abrupt_per_run():
    x, y, labels, n = runs_at_two_levels(SIZES_T, 1.6, 4.3, seed=5)
    r = judge(x, y, labels, n)
    assert r["verdict"] in ("smooth", "inconclusive"), r["evidence"]
    assert r["per_run"] == "abrupt", r["evidence"]
    assert r["share_width"] > 0.8


def test_flat_curve_and_too_few_sizes():
    rng = np.random.default_rng(3)
    t = np.repeat(SIZES_T[:8], 3)
    y = rng.binomial(N, 0.3, t.size) / N
    r = judge(10 ** t, y, np.arange(t.size).astype(str).astype(object), np.full(t.size, N))
    assert r["verdict"] == "flat", r["evidence"]
    few = flag_curve([1e4, 1e5, 1e6], [0.0, 0.1, 0.9], higher_is_better=True)
    assert few["verdict"] == "inconclusive" and "at least 4" in few["evidence"] and few["n_sizes"] == 3
    same = flag_curve(10 ** SIZES_T[:6], np.full(6, 0.5), higher_is_better=True)
    assert same["verdict"] == "flat" and same["breakthroughness"] == 0.0


def test_a_jump_between_sizes_further_apart_than_half_w0_is_inconclusive():
    rng = np.random.default_rng(2)
    t = np.repeat(3.0 + 0.4 * np.arange(8), 4)  # sizes 0.4 decades apart: more than W0 / 2
    y = rng.binomial(N, np.where(t > 4.5, 0.9, 0.02)) / N
    r = judge(10 ** t, y, np.arange(t.size).astype(str).astype(object), np.full(t.size, N))
    assert r["verdict"] == "inconclusive" and "apart" in r["evidence"], r["evidence"]


def test_a_jump_at_the_last_size_has_no_observed_ceiling():
    rng = np.random.default_rng(8)
    t = np.repeat(SIZES_T[:8], 4)
    y = rng.binomial(N, np.where(t > SIZES_T[6] + 0.1, 0.9, 0.02)) / N
    r = judge(10 ** t, y, np.arange(t.size).astype(str).astype(object), np.full(t.size, N))
    assert r["verdict"] == "inconclusive" and "ceiling is not observed" in r["evidence"], r["evidence"]


def test_lower_is_better_metric_stays_inside_its_bounds():
    rng = np.random.default_rng(1)
    t = np.repeat(SIZES_T[:10], 3)
    nll = np.maximum(2.5 - 2.4 * share(t, 4.0, 0.15) + rng.normal(0, 0.03, t.size), 0.0)
    r = flag_curve(10 ** t, nll, higher_is_better=False, seeds=np.arange(t.size).astype(str).astype(object),
                   stderr=np.full(t.size, 0.03), bounds=(0.0, None))
    assert r["verdict"] == "emergent", r["evidence"]
    assert r["floor"] > r["ceiling"] >= 0.0  # the floor of a loss is its high (worse) end


def test_a_drop_is_not_emergence():
    x, y, labels, n = runs_on_one_curve(SIZES_T, 0.2, 4.3, hi=0.02, lo=0.85, seed=6)
    r = judge(x, y, labels, n)
    assert r["verdict"] != "emergent", r["evidence"]


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="same length"):
        flag_curve([1, 2, 3], [1, 2], higher_is_better=True)
    with pytest.raises(ValueError, match="n_boot"):
        flag_curve([1, 2, 3, 4], [1, 2, 3, 4], higher_is_better=True, n_boot=0)
    with pytest.raises(ValueError, match="stderr"):
        flag_curve([1, 2, 3, 4], [1, 2, 3, 4], higher_is_better=True, stderr=[1.0])
    with pytest.raises(ValueError, match="w0 must be a positive"):
        flag_curve([1, 2, 3, 4], [1, 2, 3, 4], higher_is_better=True, w0=0)


@pytest.mark.slow
def test_the_width_test_holds_its_size_at_w0():
    """Runs at two levels whose share rises exactly W0 wide: the calibrated test says W < W0 in about 5% of 60
    curves (at most 7 of 60 allows for Monte Carlo error: P(X >= 8 | Binomial(60, .05)) = 0.02)."""
    hits = 0
    for i in range(60):
        rng = np.random.default_rng(500 + i)
        x, y, labels, n = runs_at_two_levels(SIZES_T, W0, rng.uniform(4.0, 4.8), seed=900 + i)
        hits += judge(x, y, labels, n, seed=i, n_boot=200)["p_value"] <= 0.05
    assert hits <= 7, f"{hits}/60 rejections at the null"


def test_draws_measure_a_proportion_as_the_data_were_measured():
    """A bootstrap draw measures a run of a proportion with known n as the data were: a whole number of its n
    examples correct (binomial, so never below 0), in the metric's orientation; a run whose given standard error is
    larger than the binomial one keeps a normal draw with its own variance."""
    from analysis.verdicts import _binomial_measure

    rng = np.random.default_rng(0)
    n = np.array([256.0, 256.0, 100.0])
    vm = np.array([1e-4, 1e-4, 0.04])
    measure = _binomial_measure(n, vm, 1.0, np.array([True, True, False]))
    level = np.tile([0.01, 0.9, 0.5], (4000, 1))
    y = measure(rng, level)
    assert np.allclose(y[:, :2] * 256, np.round(y[:, :2] * 256)) and (y[:, :2] >= 0).all()
    assert abs(y[:, 0].mean() - 0.01) < 0.001 and abs(y[:, 0].var() - 0.01 * 0.99 / 256) < 1e-5
    assert abs(y[:, 2].std() - 0.2) < 0.01 and not np.allclose(y[:, 2] * 100, np.round(y[:, 2] * 100))
    lower = _binomial_measure(n[:1], vm[:1], -1.0, np.array([True]))(rng, -np.full((2000, 1), 0.2))
    assert (lower <= 0).all() and abs(lower.mean() + 0.2) < 0.005  # oriented: -error rate


# ---------------------------------------------------------------------------------------------- along training
def test_a_training_step_jump_is_found_with_its_location_inside_the_interval():
    """Exact match 0.02 -> 0.92 within 300 steps, checkpoints 1,000 steps apart."""
    rng = np.random.default_rng(0)
    steps = np.arange(1000, 30001, 1000).astype(float)
    at = 12_150.0
    p = 0.02 + 0.90 * np.clip((steps - at + 150) / 300, 0, 1)
    y = rng.binomial(N, p) / N
    r = flag_along([{"x": steps, "y": y, "n": np.full(steps.size, N)}], higher_is_better=True, bounds=(0, 1),
                   x_name="step")[0]
    assert r["verdict"] == "emergent", r["evidence"]
    assert r["jump_lo"] <= at <= r["jump_hi"], r["evidence"]
    assert r["width_hi"] < W0


def test_runs_of_one_size_share_a_width_and_keep_their_own_locations():
    rng = np.random.default_rng(1)
    t = np.linspace(8, 10, 30)
    truth = [8.7, 8.9, 9.0]
    runs = [{"x": 10 ** t, "y": rng.binomial(N, 0.02 + 0.8 * share(t, c, 0.1)) / N, "n": np.full(t.size, N)}
            for c in truth]
    rows = flag_along(runs, higher_is_better=True, bounds=(0, 1))
    assert len({r["width"] for r in rows}) == 1
    for r, c in zip(rows, truth):
        assert r["verdict"] == "emergent", r["evidence"]
        assert r["jump_lo"] <= 10 ** c <= r["jump_hi"]


def test_a_gradual_rise_along_training_is_smooth():
    rng = np.random.default_rng(2)
    t = np.linspace(8, 10, 25)
    runs = [{"x": 10 ** t, "y": rng.binomial(N, 0.05 + 0.7 * share(t, 9.0, 1.5)) / N, "n": np.full(t.size, N)}]
    r = flag_along(runs, higher_is_better=True, bounds=(0, 1))[0]
    assert r["verdict"] == "smooth", r["evidence"]


# ----------------------------------------------------------------------------------------------- results tables
def results_table(share_fn, tasks, runs=6, sizes_t=SIZES_T[:12], rng=None, loss=True):
    """A tidy results table: each (size, run) is its own training run with two checkpoints. At the last one a run
    acquires the ability with probability share_fn(t); `tasks` maps (task, metric) to (value if acquired, value if
    not). The LM loss of an acquiring run is lower (0.8 against 1.2)."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for i, t in enumerate(sizes_t):
        for s in range(runs):
            made = rng.random() < share_fn(t)
            rid = f"m{i}-s{s}-{rng.integers(1e9)}"
            for step in (50, 100):
                base = dict(sweep="t", run_id=rid, model=f"m{i}", n_params=int(10 ** t), n_params_nonembed=int(10 ** t),
                            n_layer=1, d_model=8, seed=s, step=step, tokens=step * 1e4, flops=6e4 * step * 10 ** t,
                            n=N, status="ok")
                for (task, metric), (hi, lo) in tasks.items():
                    p = (hi if made else lo) if step == 100 else lo
                    if metric == "answer_nll":
                        v, se = p + rng.normal(0, 0.02), 0.02
                    else:
                        v = rng.binomial(N, p) / N
                        se = np.sqrt(v * (1 - v) / N)
                    rows.append({**base, "task": task, "metric": metric, "value": v, "stderr": se})
                if loss:
                    lv = (0.8 if made else 1.2) if step == 100 else 2.0
                    rows.append({**base, "task": "lm", "metric": "loss", "value": lv + rng.normal(0, 0.01),
                                 "stderr": 0.01})
    return pd.DataFrame(rows)


SHARP = lambda t: share(t, 4.1, 0.1)  # noqa: E731


def test_flag_emergence_columns_runs_loss_and_mirage():
    df = results_table(SHARP, {("add", "exact_match"): (0.85, 0.01), ("add", "token_accuracy"): (0.95, 0.55),
                               ("add", "answer_nll"): (0.2, 1.5)})
    flags = flag_emergence(df, n_boot=200)
    assert list(flags.columns) == FLAG_COLUMNS + EXTRA_COLUMNS
    # the columns flags.csv promises, named here rather than read from the module that writes them
    assert {"task", "metric", "x", "verdict", "jump_at", "jump_lo", "jump_hi", "evidence", "width", "width_lo",
            "width_hi", "n_runs", "per_run", "p_value", "q_value", "breakthroughness", "mirage",
            "loss_at_jump"} <= set(flags.columns)
    f = flags.set_index(["task", "metric"])
    em = f.loc[("add", "exact_match")]
    assert em["verdict"] == "emergent", em["evidence"]
    assert em["n_runs"] == 72 and em["n_sizes"] == 12
    # the continuous metrics split at the same sizes: not a mirage
    assert em["mirage"] == False, em["evidence"]  # noqa: E712
    assert f.loc[("add", "token_accuracy"), "per_run"] in ("abrupt", "undetermined")
    # one held-out loss separates the runs that acquired it from those that did not
    assert em["loss_separates"] == True and 0.8 < em["loss_at_jump"] < 1.2  # noqa: E712
    assert "separates" in em["evidence"]
    assert np.isfinite(em["q_value"]) and em["q_value"] >= em["p_value"]
    assert (flags["w0"] == W0).all()
    assert ((flags["width_lo"] <= flags["width"]) & (flags["width"] <= flags["width_hi"])).all()


def test_the_answer_length_the_rows_measured_comes_before_the_registry():
    """L of exact match ~ token_accuracy^L: rows probed through a tokenizer carry their own answer length (its
    tokens), which the registry's (the character vocabulary's) does not override; rows without one take it."""
    df = results_table(SHARP, {("add", "exact_match"): (0.85, 0.01), ("add", "token_accuracy"): (0.95, 0.55)})
    registry = flag_emergence(df, n_boot=50, answer_lengths={"add": 4.0}).set_index(["task", "metric"])
    own = flag_emergence(df.assign(answer_length=2.5), n_boot=50,
                         answer_lengths={"add": 4.0}).set_index(["task", "metric"])
    assert registry.loc[("add", "exact_match"), "answer_length"] == 4.0
    em = own.loc[("add", "exact_match")]
    assert em["answer_length"] == 2.5
    assert em["em_predicted"] > registry.loc[("add", "exact_match"), "em_predicted"]  # a shorter L: a higher p^L


def test_mirage_true_when_continuous_metrics_rise_smoothly_without_splitting():
    """Exact match jumps (two-level runs) while token accuracy rises on one smooth curve for every run."""
    rng = np.random.default_rng(3)
    df = results_table(SHARP, {("copy", "exact_match"): (0.85, 0.01)}, rng=rng)
    tok = df[df["metric"] == "exact_match"].copy()
    t = np.log10(tok["n_params"].astype(float))
    p = np.where(tok["step"] == 100, 0.3 + 0.6 * share(t, 4.1, 2.0), 0.3)
    tok["value"] = rng.binomial(N, p) / N
    tok["stderr"] = np.sqrt(tok["value"] * (1 - tok["value"]) / N)
    tok["metric"] = "token_accuracy"
    f = flag_emergence(pd.concat([df, tok]), n_boot=200).set_index(["task", "metric"])
    assert f.loc[("copy", "exact_match"), "verdict"] == "emergent"
    assert f.loc[("copy", "token_accuracy"), "verdict"] == "smooth", f.loc[("copy", "token_accuracy"), "evidence"]
    assert f.loc[("copy", "exact_match"), "mirage"] == True  # noqa: E712
    assert "likely a mirage" in f.loc[("copy", "exact_match"), "evidence"]


def test_mirage_is_na_without_continuous_metrics_and_never_true_for_lack_of_power():
    df = results_table(SHARP, {("copy", "exact_match"): (0.85, 0.01)}, loss=False)
    f = flag_emergence(df, n_boot=200).set_index(["task", "metric"])
    assert pd.isna(f.loc[("copy", "exact_match"), "mirage"])
    assert "no continuous metric" in f.loc[("copy", "exact_match"), "evidence"]
    assert pd.isna(f.loc[("copy", "exact_match"), "loss_separates"])
    # a continuous metric that is only noise (flat) gives no power: undetermined, not True
    noise = df.copy()
    noise["metric"] = "token_accuracy"
    noise["value"] = np.random.default_rng(0).binomial(N, 0.5, len(noise)) / N
    g = flag_emergence(pd.concat([df, noise]), n_boot=200).set_index(["task", "metric"])
    assert pd.isna(g.loc[("copy", "exact_match"), "mirage"]), g.loc[("copy", "exact_match"), "evidence"]


def test_seed_indices_are_never_joined_across_sizes():
    """Relabelling which run carries which seed index at each size changes nothing: every run is its own point."""
    df = results_table(SHARP, {("add", "exact_match"): (0.85, 0.01)}, loss=False)
    a = flag_emergence(df, n_boot=100).iloc[0]
    shuffled = df.copy()
    shuffled["seed"] = np.random.default_rng(0).permutation(shuffled["seed"].to_numpy())
    b = flag_emergence(shuffled, n_boot=100).iloc[0]
    for col in ("verdict", "width", "width_lo", "width_hi", "p_value", "jump_at"):
        assert a[col] == b[col] or (pd.isna(a[col]) and pd.isna(b[col])), col


def test_failed_runs_and_unmeasured_rows_are_left_out():
    df = results_table(SHARP, {("add", "exact_match"): (0.85, 0.01)}, loss=False)
    last = df["step"] == 100
    bad = df["run_id"] == df["run_id"].iloc[0]
    df.loc[bad & last, ["value", "status"]] = [np.nan, "diverged"]
    other = df["run_id"] == df["run_id"].iloc[-1]
    df.loc[other & last, ["value", "status"]] = [np.nan, "not_measured"]
    r = flag_emergence(df, n_boot=100).iloc[0]
    assert r["n_runs"] == 72 - 2 and r["verdict"] == "emergent", r["evidence"]


def test_fdr_turns_an_emergent_row_that_does_not_survive_into_inconclusive():
    rows = pd.DataFrame({"verdict": ["emergent", "smooth", "emergent"], "p_value": [0.04, 0.9, 0.001],
                         "evidence": ["emergent: a jump", "smooth: x", "emergent: a jump"]})
    out = apply_fdr(rows, 0.05)
    assert list(out["verdict"]) == ["inconclusive", "smooth", "emergent"]
    assert out["q_value"].iloc[0] == pytest.approx(0.06) and "Benjamini-Hochberg" in out["evidence"].iloc[0]


def test_other_axes_pool_checkpoints_and_bad_axes_are_refused():
    df = results_table(SHARP, {("add", "exact_match"): (0.85, 0.01)}, loss=False, sizes_t=SIZES_T[:6], runs=2)
    df["loss"] = 3.0 - np.log10(df["n_params"].astype(float)) / 3 - df["step"] / 1000
    flags = flag_emergence(df, x="loss", n_boot=50)
    assert flags.iloc[0]["n_runs"] == 24  # every checkpoint is a point along a non-size axis
    with pytest.raises(ValueError, match="not a column"):
        flag_emergence(df, x="width")
    with pytest.raises(ValueError, match="unknown metric"):
        flag_emergence(df.assign(metric="made_up"))


# ------------------------------------------------------------------------------------------ real published data
PYTHIA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-evals" / "pythia-v1"


@pytest.mark.slow
@pytest.mark.skipif(not PYTHIA.exists(), reason="../shared/data/pythia-evals is not beside the checkout")
def test_pythia_tasks_that_rise_gradually_along_training_are_never_emergent():
    """EleutherAI's own zero-shot evals of the Pythia suite (7 sizes x 27 checkpoints): LAMBADA, PIQA, SciQ,
    ARC-Easy and WinoGrande rise over a decade or more of tokens, and none is called emergent at any size."""
    from analysis.importers import import_lm_eval
    from analysis.views import flag_transitions

    df = import_lm_eval(PYTHIA)
    tasks = ["lambada_openai", "piqa", "sciq", "arc_easy", "winogrande"]
    sub = df[df["task"].isin(tasks) & (df["metric"] == "acc")]
    tr = flag_transitions(sub, x="tokens", n_boot=200)
    assert set(tr["task"]) == set(tasks) and tr["model"].nunique() == 7
    assert not (tr["verdict"] == "emergent").any(), tr.loc[tr["verdict"] == "emergent", ["model", "task", "evidence"]]
    lam = tr[tr["task"] == "lambada_openai"]
    assert (lam["verdict"] == "smooth").sum() >= 5, lam[["model", "verdict", "width", "width_lo", "width_hi"]]
    ok = tr[np.isfinite(tr["floor"])]
    assert ((ok["floor"] >= 0) & (ok["ceiling"] <= 1)).all()  # curves stay inside an accuracy's bounds


def test_calibrate_verdicts_reports_rates_against_the_targets():
    from analysis.calibrate_verdicts import FAMILIES, calibrate_verdicts

    r = calibrate_verdicts(8, workers=1, n_boot=100, size=2)
    assert set(r["families"]) == set(FAMILIES) and r["n_curves"] == 2 * 3 + 6  # the size curves are not timed
    assert r["families"]["two_level_at_w0"]["n"] == 2
    assert 0.0 <= r["families"]["two_level_sharp"]["recall_bound"] <= 1.0
    assert r["families"]["one_level_smooth"]["emergent"] == 0.0
    assert r["families"]["training_jumps"]["emergent"] >= 0.5
    assert set(r["targets"]) >= {"recall two_level_sharp >= 0.9", "1,000 curves < 60 s"}


def test_the_recall_bound_is_alpha_at_w0_and_near_one_for_a_step():
    """The Neyman-Pearson bound: against its own null it rejects as often as the level allows; against a step
    between two sizes sampled densely by 6 runs each it rejects almost always; and it grows with the design."""
    from analysis.calibrate_verdicts import recall_bound, synthetic

    d = synthetic("two_level_sharp", 3)
    w, t0, lo, hi = d["truth"]
    at_w0 = dict(d, truth=(0.5, t0, lo, hi))
    assert recall_bound(at_w0, n_sim=20_000) == pytest.approx(0.05, abs=0.01)
    step = dict(d, truth=(0.01, t0, lo, hi))
    assert recall_bound(step) > 0.5
    sparse = recall_bound(synthetic("two_level_sharp", 3, spacing=0.2))
    dense = recall_bound(synthetic("two_level_sharp", 3, spacing=0.05))
    assert dense > sparse


def test_share_width_only_for_a_share_that_rises_within_the_range():
    from analysis.perrun import share_rise

    def share_width(t, k, m):
        return share_rise(t, k, m)[0]

    t = np.log10([1e3, 2e3, 4e3, 8e3, 1.6e4, 3.2e4])
    m = np.full(6, 6)
    w = share_width(t, np.array([0, 0, 1, 5, 6, 6]), m)
    assert 0.1 < w < 0.8
    # a share that falls (runs at two levels, fewer of them high at the larger sizes) has no rise to measure
    assert np.isnan(share_width(t, np.array([4, 5, 6, 5, 2, 2]), m))
    assert np.isnan(share_width(t, np.array([0, 6, 0, 6, 0, 0]), m))  # ends where it starts
    assert share_rise(t, np.array([4, 5, 6, 5, 2, 2]), m)[1] == "no rise"
    assert share_rise(t, np.array([0, 0, 0, 6, 6, 6]), m) == (pytest.approx(np.nan, nan_ok=True), "adjacent")


def test_between_run_variance_is_recovered_from_each_sizes_own_runs():
    """tau2 + phi (y - F)(C - y) fitted by moments to the sizes' sample variances less their measurement
    variance: exact variances give back phi and tau2; a size whose runs agree adds nothing where the curve is flat."""
    from analysis.jumps import _dispersion, _phi

    ybar = np.array([[0.1, 0.1, 0.2, 0.5, 0.8, 0.9, 0.9]])
    F, C = 0.1, 0.9
    m = np.full(7, 6.0)
    vm = np.full((1, 7), 0.001)
    for phi, tau2 in ((0.8, 0.0), (0.3, 0.002), (0.0, 0.004)):
        s2 = vm + tau2 + phi * (ybar - F) * (C - ybar)
        got_phi, got_tau2, amp = _phi(ybar, s2, vm, m)
        assert got_phi[0] == pytest.approx(phi, abs=1e-9) and got_tau2[0] == pytest.approx(tau2, abs=1e-12)
        assert amp[0] == pytest.approx(C - F)
    # sample variances below the measurement variance: no negative spread
    got_phi, got_tau2, _ = _phi(ybar, vm * 0.5, vm, m)
    assert got_phi[0] == 0.0 and got_tau2[0] == 0.0
    # one run per x: the dispersion is chi2 / dof, never below 1 where measurement errors are known
    assert _dispersion(np.array([30.0]), 10, True)[0] == pytest.approx(3.0)
    assert _dispersion(np.array([5.0]), 10, True)[0] == 1.0
    assert _dispersion(np.array([5.0]), 10, False)[0] == pytest.approx(0.5)


def test_a_continuous_metric_that_jumps_elsewhere_does_not_rule_out_a_mirage():
    """Not a mirage needs the continuous metric to jump or split at the same transition; one that jumps 0.8 decades
    later says nothing about this one, and the verdict is left undetermined rather than False."""
    em = results_table(SHARP, {("add", "exact_match"): (0.85, 0.01)}, rng=np.random.default_rng(5))
    late = results_table(lambda t: share(t, 4.9, 0.1), {("add", "token_accuracy"): (0.95, 0.55)},
                         rng=np.random.default_rng(6), loss=False)
    f = flag_emergence(pd.concat([em, late], ignore_index=True), n_boot=200).set_index(["task", "metric"])
    e, tok = f.loc[("add", "exact_match")], f.loc[("add", "token_accuracy")]
    assert e["verdict"] == "emergent", e["evidence"]
    assert tok["verdict"] == "emergent" or tok["per_run"] == "abrupt", tok["evidence"]
    assert tok["jump_lo"] > e["jump_hi"]  # a later rise
    assert pd.isna(e["mirage"]), e["evidence"]


def test_a_loss_is_said_to_fall_not_to_rise():
    rng = np.random.default_rng(3)
    x = np.repeat(np.logspace(3, 5, 9), 3)
    y = 2.0 - 1.7 / (1 + np.exp(-(np.log10(x) - 4) * 4)) + rng.normal(0, 0.02, x.size)
    row = flag_curve(x, y, higher_is_better=False, seeds=np.tile([0, 1, 2], 9), n_boot=40)
    assert "falls from 1.9" in row["evidence"] and "rises from" not in row["evidence"], row["evidence"]


def test_every_verdict_carries_a_short_reason_and_too_little_data_says_so():
    rng = np.random.default_rng(0)
    two = flag_curve(np.array([1e3, 1e3, 1e4, 1e4]), np.array([0.1, 0.12, 0.8, 0.82]), higher_is_better=True,
                     n_boot=20)
    assert two["verdict"] == "inconclusive" and two["reason"] == "not enough data: 2 x value(s), 4 needed"
    same = flag_curve(np.logspace(3, 5, 6), np.full(6, 0.3), higher_is_better=True, n_boot=20)
    assert same["verdict"] == "flat" and same["reason"] == "all values identical"
    x = np.repeat(np.logspace(3, 5, 9), 3)
    wide = 0.1 + 0.8 / (1 + np.exp(-(np.log10(x) - 4) * 1.5)) + rng.normal(0, 0.01, x.size)
    row = flag_curve(x, wide, higher_is_better=True, seeds=np.tile([0, 1, 2], 9), n_boot=40)
    assert row["verdict"] == "smooth" and row["reason"] == "wider than W0"
