"""Views: transitions along training, the loss threshold, infinite resolution, and backtests, on synthetic data whose
truth is known (a transition at a known step, a known loss threshold, a known curvature, a known law)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.backtest import backtest, final_by_size
from analysis.resolution import resolution_curves, resolution_points
from analysis.views import flag_transitions, join_loss, loss_threshold, loss_view

# Pythia's checkpoint schedule (Biderman et al. 2023): 0, 1, 2, 4, ..., 512, then every 1000 steps
PYTHIA_STEPS = [0] + [2 ** i for i in range(10)] + list(range(1000, 20001, 1000))
TOKENS_PER_STEP = 1000


def table(rows: list[dict]) -> pd.DataFrame:
    """A results table from partial rows (defaults for the columns a test does not care about)."""
    base = {"sweep": "synthetic", "model": None, "n_params_nonembed": None, "n_layer": None, "d_model": None,
            "flops": np.nan, "stderr": np.nan, "n": 200, "status": "ok"}
    df = pd.DataFrame([{**base, **r} for r in rows])
    return schema.validate(df[list(schema.COLUMNS)])


def logistic_in_log(x, x0, k, lo, hi):
    return lo + (hi - lo) / (1 + (np.asarray(x, float) / x0) ** (-k))


# ------------------------------------------------------------------------------------------------ transitions
def training_run(run_id: str, rng, *, jumps: dict, mechanistic_at: float | None, n_params=100_000, seed=0):
    """One run on Pythia's schedule: for each task in `jumps` an exact-match curve with a sharp rise at that step
    (or a smooth rise if None), and the mechanistic probe with its induction transition at `mechanistic_at`."""
    rows = []
    for step in PYTHIA_STEPS:
        tok = float(step * TOKENS_PER_STEP)
        common = {"run_id": run_id, "n_params": n_params, "seed": seed, "step": step, "tokens": tok}
        for task, at in jumps.items():
            if at is None:  # smooth: linear in log tokens
                v = 0.05 + 0.08 * np.log10(1 + step)
            else:
                v = logistic_in_log(max(step, 1e-9), at, 12.0, 0.03, 0.9)
            rows.append({**common, "task": task, "metric": "exact_match",
                         "value": float(np.clip(v + rng.normal(0, 0.015), 0, 1))})
        if mechanistic_at is not None:
            icl = logistic_in_log(max(step, 1e-9), mechanistic_at, 12.0, 0.0, -1.5) + rng.normal(0, 0.03)
            pm = logistic_in_log(max(step, 1e-9), mechanistic_at, 12.0, 0.05, 0.6) + rng.normal(0, 0.015)
            rows.append({**common, "task": "mechanistic", "metric": "icl_score", "value": float(icl)})
            rows.append({**common, "task": "mechanistic", "metric": "prefix_matching", "value": float(pm)})
    return rows


@pytest.fixture(scope="module")
def transitions():
    rng = np.random.default_rng(7)
    rows = training_run("a", rng, jumps={"recall": 3000, "late": 15000, "smooth": None}, mechanistic_at=3000)
    rows += training_run("b", rng, jumps={"recall": 3000}, mechanistic_at=None, seed=1)
    return flag_transitions(table(rows), x="tokens")


def row_of(df, **where):
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        mask &= (df[k] == v).to_numpy(dtype=bool)
    assert mask.sum() == 1, where
    return df[mask].iloc[0]


def test_transition_at_a_known_step_is_found_inside_its_interval(transitions):
    r = row_of(transitions, run_id="a", task="recall", metric="exact_match")
    assert r["verdict"] == "emergent", r["evidence"]
    true_tokens = 3000 * TOKENS_PER_STEP
    assert r["jump_lo"] <= true_tokens <= r["jump_hi"], r["evidence"]
    assert r["jump_lo"] <= r["jump_at"] <= r["jump_hi"]
    assert r["x"] == "tokens" and "left out" in r["evidence"]  # step 0 has no place on a log axis
    late = row_of(transitions, run_id="a", task="late", metric="exact_match")
    assert late["verdict"] == "emergent" and late["jump_lo"] <= 15000 * TOKENS_PER_STEP <= late["jump_hi"]


def test_coincidence_with_the_induction_transition(transitions):
    recall = row_of(transitions, run_id="a", task="recall", metric="exact_match")
    assert recall["induction_lo"] <= 3000 * TOKENS_PER_STEP <= recall["induction_hi"]
    assert recall["coincides_with_induction"] is True or recall["coincides_with_induction"] == True  # noqa: E712
    late = row_of(transitions, run_id="a", task="late", metric="exact_match")
    assert late["coincides_with_induction"] == False  # noqa: E712 (jumps, but long after the heads formed)
    smooth = row_of(transitions, run_id="a", task="smooth", metric="exact_match")
    assert smooth["verdict"] != "emergent" and pd.isna(smooth["coincides_with_induction"])
    # run b has no mechanistic rows: it cannot say
    b = row_of(transitions, run_id="b", task="recall", metric="exact_match")
    assert b["verdict"] == "emergent" and pd.isna(b["coincides_with_induction"])
    mech = transitions[transitions["task"] == "mechanistic"]
    assert mech["coincides_with_induction"].isna().all() and (mech["verdict"] == "emergent").all()


def test_transitions_one_row_per_run_task_metric(transitions):
    assert not transitions.duplicated(["run_id", "task", "metric"]).any()
    assert len(transitions) == 3 + 2 + 1  # run a: 3 tasks + 2 mechanistic metrics; run b: 1 task
    for col in ("run_id", "verdict", "jump_at", "jump_lo", "jump_hi", "breakthroughness", "width", "width_lo",
                "width_hi", "p_value", "q_value", "evidence", "coincides_with_induction"):
        assert col in transitions.columns
    w = transitions.dropna(subset=["width"])
    assert len(w) and ((w["width_lo"] <= w["width"]) & (w["width"] <= w["width_hi"])).all()


def test_mirage_along_training():
    # exact match jumps within the run; token accuracy of the same task rises smoothly (a mirage), or jumps too
    rng = np.random.default_rng(11)
    rows = training_run("m", rng, jumps={"t": 3000}, mechanistic_at=None)
    base = [r for r in rows if r["metric"] == "exact_match"]
    smooth = [{**r, "metric": "token_accuracy", "value": 0.2 + 0.12 * np.log10(1 + r["step"]) + rng.normal(0, 0.01)}
              for r in base]
    tr = flag_transitions(table(rows + smooth))
    em = row_of(tr, task="t", metric="exact_match")
    assert em["verdict"] == "emergent" and row_of(tr, task="t", metric="token_accuracy")["verdict"] == "smooth"
    assert em["mirage"] == True  # noqa: E712
    # a continuous metric that shows nothing (flat noise) lacks the power to tell: never True
    flat = [{**r, "metric": "token_accuracy", "value": 0.5 + rng.normal(0, 0.01)} for r in base]
    tr3 = flag_transitions(table(rows + flat))
    assert row_of(tr3, task="t", metric="token_accuracy")["verdict"] in ("flat", "inconclusive")
    assert pd.isna(row_of(tr3, task="t", metric="exact_match")["mirage"])
    jumping = [{**r, "metric": "token_accuracy", "value": r["value"] * 0.5 + 0.4} for r in base]
    tr2 = flag_transitions(table(rows + jumping))
    assert row_of(tr2, task="t", metric="exact_match")["mirage"] == False  # noqa: E712


def test_transitions_reject_a_size_axis():
    with pytest.raises(ValueError, match="along training"):
        flag_transitions(table(training_run("a", np.random.default_rng(0), jumps={"t": 3000}, mechanistic_at=None)),
                         x="n_params")


# ---------------------------------------------------------------------------------------------------- loss view
ETA = 3.2
LOSS_SIZES = [2e6, 6e6, 2e7, 6e7, 2e8]
LOSS_STEPS = [2 ** i for i in range(1, 10)] + list(range(1000, 10001, 1000))


def loss_table(rng, *, size_effect: float = 0.0, eta: float = ETA) -> pd.DataFrame:
    """Every size's checkpoints: loss L(N, s) = 1.8 + 20 N^-0.2 + 10 s^-0.35 (a Chinchilla-like surface; final
    losses 3.3 to 2.6), and an accuracy at chance (0.25) while L > eta, rising linearly as L falls below it (Du et
    al. 2024's picture), plus noise; `size_effect` adds a dependence on size that loss does not carry."""
    rows = []
    for i, n in enumerate(LOSS_SIZES):
        for step in LOSS_STEPS:
            loss = 1.8 + 20 * n ** -0.2 + 10 * step ** -0.35
            acc = 0.25 + 1.0 * max(0.0, eta - loss) + size_effect * np.log10(n / 2e6) + rng.normal(0, 0.02)
            common = {"run_id": f"r{i}", "n_params": int(n), "seed": 0, "step": step, "tokens": step * 1e4}
            rows.append({**common, "task": "lm", "metric": "loss", "value": loss + rng.normal(0, 0.005)})
            rows.append({**common, "task": "qa", "metric": "exact_match", "value": float(np.clip(acc, 0, 1))})
    return table(rows)


@pytest.fixture(scope="module")
def loss_flags():
    return loss_view(loss_table(np.random.default_rng(3)), n_boot=200)


def test_known_loss_threshold_is_recovered_within_its_interval(loss_flags):
    r = row_of(loss_flags, task="qa", metric="exact_match")
    assert r["eta_lo"] <= ETA <= r["eta_hi"], r["evidence"]
    assert abs(r["eta"] - ETA) < 0.1
    assert r["eta_hi"] - r["eta_lo"] < 0.5  # an interval that says something
    # the rise below eta is linear over 0.6 nats: wider than the loss view's W0 of 0.1 nats, so smooth, with the
    # middle of the rise (in loss units, below the onset) inside its interval
    assert r["verdict"] == "smooth", r["evidence"]
    assert r["width_lo"] > 0.1 and r["w0"] == pytest.approx(0.1)
    assert r["x"] == "loss" and r["n_points"] == len(LOSS_SIZES) * len(LOSS_STEPS)
    assert r["jump_lo"] <= r["jump_at"] <= r["jump_hi"] < ETA
    assert "units of loss" in r["evidence"] and f"eta = {r['eta']:.4g}" in r["evidence"]


def test_flag_emergence_with_loss_as_x_is_the_loss_view():
    from analysis.flags import flag_emergence

    df = loss_table(np.random.default_rng(3))
    flags = flag_emergence(df, x="loss", n_boot=50)
    assert {"eta", "eta_lo", "eta_hi", "size_explains_p", "size_still_matters", "verdict"} <= set(flags.columns)
    assert list(flags["task"]) == ["qa"]  # the loss is the x, not a task


def test_size_does_not_matter_when_loss_explains_everything(loss_flags):
    r = row_of(loss_flags, task="qa", metric="exact_match")
    assert r["size_explains_p"] > 0.05 and r["size_still_matters"] == False  # noqa: E712


def test_size_matters_when_it_carries_information_beyond_loss():
    flags = loss_view(loss_table(np.random.default_rng(4), size_effect=0.05), n_boot=50)
    r = row_of(flags, task="qa", metric="exact_match")
    assert r["size_explains_p"] < 0.001 and r["size_still_matters"] == True  # noqa: E712


def test_join_loss_pairs_each_checkpoint_with_its_own_loss():
    df = loss_table(np.random.default_rng(5))
    j = join_loss(df)
    assert set(j["task"]) == {"qa"} and len(j) == len(LOSS_SIZES) * len(LOSS_STEPS)
    lm = df[(df["task"] == "lm")].set_index(["run_id", "step"])["value"]
    for r in j.sample(5, random_state=0).itertuples():
        assert r.loss == pytest.approx(lm[(r.run_id, r.step)])


def test_loss_view_needs_loss_rows():
    df = loss_table(np.random.default_rng(6))
    with pytest.raises(ValueError, match="task='lm', metric='loss'"):
        loss_view(df[df["task"] != "lm"])
    with pytest.raises(ValueError, match="the loss itself is its x"):
        loss_threshold(df, "lm", "loss")


# ----------------------------------------------------------------------------------------------------- backtest
def size_table(values_by_size: dict, *, seeds=(0, 1), noise=0.0, rng=None, task="t", metric="answer_nll"):
    """Final and earlier checkpoints for each size and seed; the final one carries `values_by_size`."""
    rows = []
    for n, v in values_by_size.items():
        for s in seeds:
            eps = rng.normal(0, noise) if rng is not None else 0.0
            common = {"run_id": f"{task}-{n}-{s}", "n_params": int(n), "seed": s, "tokens": 1e6, "task": task,
                      "metric": metric}
            rows.append({**common, "step": 10, "value": v * 3})  # an early checkpoint: must be ignored
            rows.append({**common, "step": 100, "value": v + eps})
    return table(rows)


def test_backtest_predicts_a_known_power_law():
    sizes = [int(round(v)) for v in np.logspace(5, 8, 7)]
    truth = {n: 1.5 + 40 * n ** -0.3 for n in sizes}
    df = size_table(truth, rng=np.random.default_rng(0), noise=0.003)
    bt = backtest(df, "power", "n_params", holdout=2, n_boot=100)
    assert list(bt["x_value"]) == list(sizes[-2:]) and (bt["n_fit"] == 5).all()
    for r in bt.itertuples():
        assert r.lo <= r.prediction <= r.hi
        assert abs(r.prediction - truth[r.x_value]) < 0.03
        assert r.error == pytest.approx(r.actual - r.prediction)
    assert bt["inside"].all()


def test_backtest_misses_an_emergent_jump():
    # smooth and flat on the small sizes, then a jump at the largest: the law fitted below cannot see it coming
    sizes = np.logspace(5, 8, 7)
    truth = {n: (0.02 + 0.002 * np.log10(n) if n < 5e7 else 0.8) for n in sizes}
    df = size_table(truth, rng=np.random.default_rng(1), noise=0.005, metric="exact_match")
    bt = backtest(df, "linear_log", "n_params", holdout=1, n_boot=100)
    r = bt.iloc[0]
    assert r["actual"] == pytest.approx(0.8, abs=0.02)
    assert r["inside"] == False and r["error"] > 0.5  # noqa: E712


def test_backtest_intervals_stay_inside_the_metric_bounds():
    # a logistic climbing fast through the fitted sizes: unbounded, its extrapolated interval leaves [0, 1]
    sizes = np.logspace(5, 8, 7)
    truth = {n: 0.05 + 0.9 / (1 + (n / 3e6) ** -1.5) for n in sizes}
    df = size_table(truth, rng=np.random.default_rng(2), noise=0.04, metric="exact_match")
    bt = backtest(df, "logistic", "n_params", holdout=2, n_boot=100)
    assert len(bt) == 2 and bt["lo"].notna().all()
    assert (bt["lo"] >= 0).all() and (bt["hi"] <= 1).all() and (bt["prediction"] <= 1).all()
    free = backtest(df, "logistic", "n_params", holdout=2, n_boot=100, y_bounds=(None, None))
    assert (free["hi"] > 1).any()  # the same fit without the metric's bounds: the check above can fail


def test_final_by_size_averages_seeds_at_the_last_step():
    df = size_table({1e5: 1.0, 1e6: 0.5}, seeds=(0, 1, 2))
    f = final_by_size(df)
    assert list(f["value"]) == [1.0, 0.5] and list(f["n_seeds"]) == [3, 3]


def test_backtest_plain_table_and_too_few_sizes():
    plain = pd.DataFrame({"n": [1e5, 1e6, 1e7, 1e8], "loss": [4.0, 3.0, 2.5, 2.2]})
    bt = backtest(plain, "power", "n", "loss", holdout=1, n_boot=0)
    assert len(bt) == 1 and "needs 4 sizes" in bt["note"].iloc[0] and np.isnan(bt["prediction"].iloc[0])
    with pytest.raises(ValueError, match="holdout must be"):
        backtest(plain, "power", "n", "loss", holdout=0)
    with pytest.raises(ValueError, match="column 'size' is not in the table"):
        backtest(plain, "power", "size", "loss")


# -------------------------------------------------------------------------------------------- infinite resolution
SIZES = np.logspace(5, 8, 7)


def resolution_instances(c2: float, *, spread: float = 0.2, n_examples: int = 300, seeds: int = 1,
                         noise: float = 0.05, rng_seed: int = 0, task: str = "t", sizes=SIZES) -> pd.DataFrame:
    """Per-example answer log-probabilities whose mean-P transform follows y = log 0.8 - 0.5 t + c2 t^2 (t centred
    ln size). Each example has a fixed difficulty (lognormal, `spread`) and a little noise per run (`noise`); each
    run also has an earlier checkpoint with worse answers that must be ignored (only final checkpoints count)."""
    rng = np.random.default_rng(rng_seed)
    t = np.log(sizes) - np.log(sizes).mean()
    y = np.log(0.8) - 0.5 * t + c2 * t ** 2
    difficulty = rng.normal(0.0, spread, n_examples)
    frames = []
    for i, (n, yy) in enumerate(zip(sizes, y)):
        for s in range(seeds):
            nll = np.exp(yy + difficulty + rng.normal(0.0, noise, n_examples))  # -log p_i, a power law in size
            for step, scale in ((50, 3.0), (100, 1.0)):
                frames.append(pd.DataFrame({
                    "run_id": f"{task}-{i}-{s}", "step": step, "task": task, "example_id": np.arange(n_examples),
                    "answer_logprob": -nll * scale, "exact": (nll * scale < 0.1).astype(int),
                    "n_params": int(n), "seed": s}))
    return pd.concat(frames, ignore_index=True)


def test_pure_power_law_in_minus_log_p_is_linear():
    r = resolution_curves(resolution_instances(0.0), n_boot=300).iloc[0]
    assert r["shape"] == "linear", r["evidence"]
    # the slope of log(-log P) on ln N is the power law's exponent, -0.5, within its interval
    assert r["slope_lo"] <= -0.5 <= r["slope_hi"] or abs(r["slope"] + 0.5) < 0.02
    assert r["n_sizes"] == 7 and r["n_examples"] == 300


@pytest.mark.parametrize("c2,shape", [(-0.08, "concave"), (0.08, "convex")])
def test_known_curvature_is_classified(c2, shape):
    r = resolution_curves(resolution_instances(c2, seeds=2), n_boot=300).iloc[0]
    assert r["shape"] == shape, r["evidence"]
    assert r["curvature_lo"] < r["curvature"] < r["curvature_hi"]
    assert abs(r["curvature"] - c2) < 0.02


def test_points_are_the_final_checkpoint_mean_probability():
    inst = resolution_instances(0.0, n_examples=50)
    pts = resolution_points(inst)
    final = inst[inst["step"] == 100]
    n0 = SIZES[0]
    expected_p = np.exp(final.loc[final["n_params"] == int(n0), "answer_logprob"]).mean()
    got = pts.loc[pts["n_params"] == int(n0)].iloc[0]
    assert got["p"] == pytest.approx(expected_p, rel=1e-9)
    assert got["loglogp"] == pytest.approx(np.log(-np.log(expected_p)), rel=1e-9)


def test_probability_one_and_zero_are_left_out_not_infinite():
    inst = resolution_instances(0.0, n_examples=40)
    largest = inst["n_params"] == inst["n_params"].max()
    inst.loc[largest, "answer_logprob"] = 0.0  # p = 1 for every example: log(-log 1) = -inf
    smallest = inst["n_params"] == inst["n_params"].min()
    inst.loc[smallest, "answer_logprob"] = -np.inf  # p = 0: log(-log 0) = +inf
    pts = resolution_points(inst)
    assert pts["loglogp"].isna().sum() == 2
    assert pts.loc[pts["loglogp"].isna(), "note"].str.contains("probability 1|probability 0").all()
    r = resolution_curves(inst, n_boot=100).iloc[0]
    assert r["n_sizes"] == 5 and np.isfinite(r["curvature"]) and "2 left out" in r["evidence"]


def test_tiny_probabilities_do_not_underflow():
    inst = resolution_instances(0.0, n_examples=40)
    inst["answer_logprob"] = inst["answer_logprob"] * 2000 - 800  # p around exp(-800..): 0.0 in float64
    pts = resolution_points(inst)
    assert np.isfinite(pts["loglogp"]).all()  # computed in log space


def test_too_few_sizes_is_inconclusive():
    r = resolution_curves(resolution_instances(0.0, sizes=SIZES[:3]), n_boot=100).iloc[0]
    assert r["shape"] == "inconclusive" and "at least 4" in r["evidence"]


def test_sizes_joined_from_runs_table():
    inst = resolution_instances(0.08, seeds=1)
    runs = inst[["run_id", "n_params"]].drop_duplicates()
    r = resolution_curves(inst.drop(columns=["n_params"]), runs=runs, n_boot=200).iloc[0]
    assert r["shape"] == "convex"


def test_bad_input():
    inst = resolution_instances(0.0, n_examples=10)
    with pytest.raises(ValueError, match="no 'n_params' column; pass runs="):
        resolution_curves(inst.drop(columns=["n_params"]))
    with pytest.raises(ValueError, match="missing column.*'answer_logprob'"):
        resolution_curves(inst.drop(columns=["answer_logprob"]))
    bad = inst.copy()
    bad.loc[0, "answer_logprob"] = 0.5
    with pytest.raises(ValueError, match="must be <= 0"):
        resolution_curves(bad)


def test_the_views_beside_the_flags_write_the_same_files_in_one_process_or_two(tmp_path):
    """run_analysis computes transitions and the loss view in worker processes beside the flags; the files are the
    same as when everything runs in one process."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from report_sweep import make_sweep

    from analysis.pipeline import run_analysis

    sweep = make_sweep(tmp_path / "s", with_analysis=False)
    df = pd.read_parquet(sweep / "results.parquet")
    opts = {"n_boot": 40, "loss_w0": 0.1}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = run_analysis(df, tmp_path / "one", views=["transitions", "loss"], n_boot=0, flag_options=opts, workers=1)
    two = run_analysis(df, tmp_path / "two", views=["transitions", "loss"], n_boot=0, flag_options=opts, workers=2)
    assert set(one) == set(two) == {"fits", "fit_bands", "flags", "transitions", "loss"}
    for name in ("flags", "transitions", "loss"):
        a, b = Path(one[name]).read_bytes(), Path(two[name]).read_bytes()
        assert a == b and len(a.splitlines()) > 2, name


def test_the_transitions_view_reports_its_progress_and_the_result_is_unchanged(transitions):
    """A large table takes minutes in this view: it reports each judged group, and the lines say how far it is."""
    import io

    from analysis.pipeline import ProgressLines

    rng = np.random.default_rng(7)  # the fixture's table again
    rows = training_run("a", rng, jumps={"recall": 3000, "late": 15000, "smooth": None}, mechanistic_at=3000)
    rows += training_run("b", rng, jumps={"recall": 3000}, mechanistic_at=None, seed=1)
    calls = []
    out = flag_transitions(table(rows), x="tokens", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]  # one size: recall, late, smooth, icl_score, prefix_matching
    pd.testing.assert_frame_equal(out, transitions)
    text = io.StringIO()
    lines = ProgressLines("transitions view", every=0.0, file=text)
    for i in range(1, 5):
        lines(i, 4)
    printed = text.getvalue().splitlines()
    assert printed[0].startswith("transitions view: 1 of 4 groups judged in ") and printed[0].endswith(" s left")
    assert printed[-1].startswith("transitions view: 4 of 4 groups") and "left" not in printed[-1]
    quiet = io.StringIO()
    lines = ProgressLines("transitions view", every=3600.0, file=quiet)
    for i in range(1, 5):
        lines(i, 4)
    assert quiet.getvalue() == ""  # a view that ends before the first interval prints nothing
