"""Forecasts from a ladder: synthetic ladders with a known L(N, D) and a known sigmoid of the loss, the rolling
backtest, bounds, and bad input."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import forecast as fc
from analysis import ladder as ld
from analysis.calibrate_forecast import synthetic_ladder, synthetic_predictions, true_loss, true_score


@pytest.fixture(scope="module")
def lad():
    return synthetic_ladder(np.random.default_rng(1))


def test_two_step_recovers_the_loss_and_the_score_within_their_intervals(lad):
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    out = fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="two_step")
    r = out.iloc[0]
    L, y = true_loss(6e8, 3e9), true_score(true_loss(6e8, 3e9))
    assert r["method"].startswith("two_step (chinchilla")  # the ladder varies N and D independently
    assert r["via_lo"] <= L <= r["via_hi"] and abs(r["via_predicted"] - L) / L < 0.02
    assert r["lo"] <= y <= r["hi"] and abs(r["predicted"] - y) < 0.05
    assert 0 <= r["lo"] <= r["predicted"] <= r["hi"] <= 1


def test_direct_stays_inside_the_metric_bounds_far_beyond_the_ladder(lad):
    at = pd.DataFrame({"n_params": [1e10, 1e12], "tokens": [1e11, 1e13]})
    out = fc.forecast(lad, at, "t", "exact_match", method="direct")
    assert (out["lo"] >= 0).all() and (out["hi"] <= 1).all() and (out["lo"] <= out["hi"]).all()
    assert out["method"].str.startswith("direct").all()
    assert "via_predicted" not in out.columns


def test_a_given_floor_is_the_sigmoid_floor(lad):
    tiny = pd.DataFrame({"n_params": [1e3], "tokens": [1e3]})  # a model so small its loss is huge: chance level
    out = fc.forecast(lad, tiny, "t", "exact_match", via="answer_nll", method="two_step", floor=0.25)
    assert out["predicted"].iloc[0] == pytest.approx(0.25, abs=1e-3)


def test_a_given_ceiling_is_the_score_at_zero_loss(lad):
    """The ceiling of step 2 is the score as the loss goes to 0: given, the sigmoid reaches it there, and only there
    (the direct route's ceiling, at unbounded compute, stays fitted)."""
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    model = fc._Fitted("two_step", *fc.ladder(lad, "t", "exact_match", "answer_nll"), (0.0, 1.0), None, 50, 0,
                       ceiling=1.0)
    assert model.fit.params["ceiling"] == 1.0 and model.fit.predict([1e9]) == pytest.approx(1.0, abs=1e-6)
    free = fc._Fitted("two_step", *fc.ladder(lad, "t", "exact_match", "answer_nll"), (0.0, 1.0), None, 50, 0)
    lo, hi = free.fit.ci["ceiling"]  # fitted, the ceiling varies between bootstrap refits; given, it does not
    assert lo < hi - 0.1 and model.fit.ci["ceiling"] == pytest.approx((1.0, 1.0))
    out = fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="direct", ceiling=1.0, n_boot=50)
    assert out["method"].iloc[0].startswith("direct")


@pytest.mark.parametrize("kw, message", [
    ({"ceiling": 1.5}, "ceiling 1.5 is outside exact_match's range"),
    ({"floor": -0.1}, "floor -0.1 is outside"),
    ({"floor": 0.6, "ceiling": 0.5}, "floor 0.6 must lie below the ceiling 0.5"),
])
def test_impossible_levels_are_refused_with_one_line(lad, kw, message):
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    with pytest.raises(ValueError, match=message):
        fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="two_step", **kw)
    with pytest.raises(ValueError, match=message):
        fc.forecast_backtest(lad, "t", "exact_match", via="answer_nll", **kw)


def test_a_new_run_scatters_as_the_runs_of_the_largest_sizes_do(lad):
    """A new run's draws resample the residuals of the runs at the ladder's two largest sizes, not of every run:
    where those runs split (some acquired the ability, some did not), the interval must hold either fate."""
    final, points = fc.ladder(lad, "t", "exact_match", "answer_nll")
    model = fc._Fitted("two_step", final, points, (0.0, 1.0), None, 50, 0)
    top = final[final["n_params"].isin(np.sort(final["n_params"].unique())[-2:])]
    assert len(model.loss_fit.residuals) == len(top) == 12  # 2 sizes x 3 budgets x 2 seeds
    expect = np.log(top["via"].to_numpy()) - np.log(model.loss_fit.predict(top[["n_params", "tokens"]]))
    assert np.allclose(np.sort(model.loss_fit.residuals), np.sort(expect))
    # 12 residuals cannot be resampled into a 95% interval: a new run's scatter is s t_12, s their RMS
    assert model.loss_fit.scatter == "t" and model.fit.scatter == "resample"
    X = np.array([[6e8] * 20000, [3e9] * 20000])
    eps = np.log(model.loss_fit.draws(X, rng=np.random.default_rng(0))) - np.log(
        model.loss_fit.draws(X, "confidence"))
    s = np.sqrt(np.mean(expect ** 2))
    assert np.quantile(np.abs(eps), 0.95) == pytest.approx(s * stats.t.ppf(0.975, 12), rel=0.05)
    # the largest size's runs split: half stay at the untrained loss; a run of the next size may too
    split = lad.copy()
    big = split["n_params"] == split["n_params"].max()
    odd = big & split["run_id"].str.endswith("s1") & (split["metric"] == "answer_nll")
    split.loc[odd, "value"] *= 3.0
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    wide = fc.forecast(split, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=100)
    narrow = fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=100)
    assert wide["via_hi"].iloc[0] > 2 * narrow["via_hi"].iloc[0] and wide["lo"].iloc[0] < narrow["lo"].iloc[0] - 0.05


def test_two_budgets_cannot_separate_n_and_d(lad):
    """L(N, D) is fitted only where three budgets or more identify B and beta; with two, step 1 is a power law in
    compute."""
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    two = lad[lad["run_id"].str.contains("_D3000000000_|_D1000000000_")]
    assert two.groupby("run_id")["tokens"].max().nunique() == 2
    out = fc.forecast(two, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=50)
    assert out["method"].iloc[0].startswith("two_step (power in compute")


def test_a_run_unmeasured_at_its_last_checkpoint_has_no_final_point(lad):
    """The schema's one rule: a run's final checkpoint is its last, and a metric not measured there leaves the run
    without a final point instead of falling back to an earlier, less-trained checkpoint."""
    run = lad["run_id"].iloc[0]
    last = lad["step"].max()
    gap = lad.copy()
    hole = (gap["run_id"] == run) & (gap["step"] == last) & (gap["metric"] == "exact_match")
    gap.loc[hole, ["value", "stderr"]] = np.nan
    gap.loc[hole, "status"] = "not_measured"
    final, points = fc.ladder(gap, "t", "exact_match", "answer_nll")
    full, _ = fc.ladder(lad, "t", "exact_match", "answer_nll")
    assert run not in set(final["run_id"]) and len(final) == len(full) - 1
    assert run in set(points["run_id"])  # its earlier checkpoints still serve the sigmoid of step 2
    assert (full.merge(final, on="run_id")["value_x"] == full.merge(final, on="run_id")["value_y"]).all()


def test_backtest_predicts_each_larger_size_from_the_smaller_ones(lad):
    bt = fc.forecast_backtest(lad, "t", "exact_match", via="answer_nll", n_boot=100)
    sizes = np.sort(lad["n_params"].unique())
    # origins: every size with at least 3 sizes below it; each predicts the 6 runs (3 budgets x 2 seeds) of that size
    assert sorted(bt["origin"].unique()) == list(sizes[3:])
    assert (bt.groupby(["method", "origin"]).size() == 6).all()
    assert set(bt["method"]) == {"two_step", "direct", "direct_log"}
    assert bt["laws"].str.startswith(tuple(bt["method"])).all()
    cov = fc.coverage(bt)
    assert (cov["n_origins"] == 3).all() and (cov["n_predicted"] == 18).all()
    assert ((cov["coverage"] >= 0) & (cov["coverage"] <= 1)).all()
    widths = (bt["hi"] - bt["lo"]).groupby(bt["method"]).mean()
    assert np.allclose(cov.set_index("method")["mean_width"], widths.loc[cov["method"]])
    assert np.allclose(bt["error"], bt["predicted"] - bt["actual"])
    assert fc.choose_method(bt) in fc.METHODS
    # the calibrated intervals use the earlier origins' drift only: the first origin has none, and is the bootstrap
    # interval widened SHORT_WIDEN x; later ones hold at least the bootstrap interval
    first = bt[bt["origin"] == sizes[3]]
    assert np.allclose(first["hi_cal"], np.minimum(1, first["predicted"] + 1.5 * (first["hi"] - first["predicted"])))
    assert np.allclose(first["lo_cal"], np.maximum(0, first["predicted"] - 1.5 * (first["predicted"] - first["lo"])))
    later = bt[bt["origin"] > sizes[3]]
    assert (later["lo_cal"] <= later["lo"] + 1e-12).all() and (later["hi_cal"] >= later["hi"] - 1e-12).all()
    # decades of compute past the largest run fitted: negative for a larger size on a smaller budget
    fitted_max = {o: 6 * (lad.loc[lad["n_params"] < o, "n_params"] * lad.loc[lad["n_params"] < o, "tokens"]).max()
                  for o in sizes[3:]}
    want = np.log10(6 * bt["n_params"] * bt["tokens"] / bt["origin"].map(fitted_max))
    assert np.allclose(bt["distance"], want) and (bt["distance"] < 0).any() and (bt["distance"] > 0).any()
    assert (cov["n_cal"] == 18 - cov["n_rise_unseen"]).all() and cov["coverage_cal_seen"].between(0, 1).all()


@pytest.mark.slow
def test_prediction_intervals_hold_at_their_nominal_rate_over_repeated_ladders():
    """20 ladders; each predicts the 6 runs of its largest size from the 5 below. A 95% prediction interval for a
    run's measurement should hold about 95% of them: with 120 predictions, at least 85% (3 standard errors below 95%,
    counted by ladder: its 6 runs share one fitted curve, and over 30 ladders the share's standard error was 2.5%,
    3.1% for 20) and not every one of them on every ladder by being too wide (the mean width stays under 0.3)."""
    p = synthetic_predictions(20, n_boot=100, methods=("two_step",))["two_step"]
    hits = (p["lo"] <= p["value"]) & (p["value"] <= p["hi"])
    assert len(p) == 120 and np.mean(hits) >= 0.85, np.mean(hits)
    assert np.mean(p["hi"] - p["lo"]) < 0.3


@pytest.mark.parametrize("at, message", [
    ({"n_params": [1e9]}, "needs tokens"),
    ({"n_params": [0.0], "tokens": [1e9]}, "n_params must be a positive number"),
    ({"n_params": [np.nan], "tokens": [1e9]}, "n_params must be a positive number"),
    ({"n_params": [], "tokens": []}, "no target given"),
])
def test_bad_targets_are_refused_with_one_line(lad, at, message):
    with pytest.raises(ValueError, match=message):
        fc.forecast(lad, pd.DataFrame(at), "t", "exact_match", via="answer_nll")


def test_a_ladder_too_small_or_a_wrong_name_is_refused(lad):
    small = lad[lad["n_params"] <= np.sort(lad["n_params"].unique())[1]]
    at = pd.DataFrame({"n_params": [1e9], "tokens": [1e9]})
    with pytest.raises(ValueError, match="2 size\\(s\\).*at least 3 sizes"):
        fc.forecast(small, at, "t", "exact_match", method="direct")
    with pytest.raises(ValueError, match="no measured metric 'bits_per_byte'"):
        fc.forecast(lad, at, "t", "exact_match", via="bits_per_byte", method="two_step")
    with pytest.raises(ValueError, match="two_step needs via"):
        fc.forecast(lad, at, "t", "exact_match", method="two_step")


def test_cli_writes_both_tables_and_refuses_bad_targets(lad, tmp_path, capsys):
    from emergence.cli import main

    lad.to_parquet(tmp_path / "results.parquet")

    def run(*args):
        return main(["forecast", str(tmp_path), "--task", "t", "--metric", "exact_match", *args])

    assert run("--via", "answer_nll", "--method", "two_step", "--n-boot", "50", "--at", "n_params=6e8,tokens=3e9") == 0
    assert "inside their 95% interval over 3 origins" in capsys.readouterr().out
    pred = pd.read_csv(tmp_path / "forecast.csv")
    assert len(pred) == 1 and pred["lo"].iloc[0] <= pred["predicted"].iloc[0] <= pred["hi"].iloc[0]
    assert set(pd.read_csv(tmp_path / "forecast_backtest.csv")["method"]) == {"two_step"}
    from analysis.report import write_report

    html = write_report(tmp_path)["html"].read_text()
    section = html[html.index('id="forecast"'):]
    assert "t exact_match, two_step:" in section
    assert "runs inside their 95% prediction interval over 3 origins" in section
    assert (tmp_path / "plots" / "forecast.png").exists()
    for bad in ("n_params=6e8", "n_params=-1,tokens=3e9", "size=6e8,tokens=3e9"):
        (tmp_path / "forecast.csv").unlink(missing_ok=True)
        assert run("--at", bad) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "emergence forecast: error:" in err, err
        assert not (tmp_path / "forecast.csv").exists()


@pytest.mark.parametrize("inside, warned", [(10, True), (19, False)])
def test_the_report_warns_when_the_backtest_intervals_held_too_rarely(tmp_path, inside, warned):
    from analysis.report import build_document, load_sweep, render_md

    bt = pd.DataFrame({"task": "t", "metric": "exact_match", "method": "two_step", "laws": "two_step (x)",
                       "origin": np.repeat([1e6, 2e6], 10), "n_fit_sizes": 3, "run_id": [f"r{i}" for i in range(20)],
                       "n_params": 1e6, "tokens": 1e9, "predicted": 0.5, "lo": 0.4, "hi": 0.6, "actual": 0.5,
                       "error": 0.0, "rel_error": 0.0, "inside": [True] * inside + [False] * (20 - inside)})
    bt.to_csv(tmp_path / "forecast_backtest.csv", index=False)
    synthetic_ladder(np.random.default_rng(0), sizes=[1e6, 2e6], budgets=[1e9], seeds=1,
                     checkpoints=1).to_parquet(tmp_path / "results.parquet")
    md = render_md(build_document(load_sweep(tmp_path)), {})
    assert f"{100 * inside / 20:g}% of 20 runs inside their 95% prediction interval over 2 origins" in md
    assert "the intervals 0.2 wide on average" in md
    assert ("too narrow here" in md) is warned


def _with_general_loss(lad):
    """The synthetic ladder with its loss moved to another task as a perplexity: exp(answer_nll) under `lm`."""
    loss = lad[lad["metric"] == "answer_nll"]
    moved = loss.assign(task="lm", metric="perplexity", value=np.exp(loss["value"]))
    return pd.concat([lad[lad["metric"] != "answer_nll"], moved], ignore_index=True)


def test_a_loss_of_another_task_is_joined_run_by_run_and_a_perplexity_read_as_its_log(lad):
    final, points = fc.ladder(_with_general_loss(lad), "t", "exact_match", via="lm:perplexity")
    same_final, same_points = fc.ladder(lad, "t", "exact_match", via="answer_nll")
    # the same loss, checkpoint by checkpoint: log(exp(nll)) joined on (run, step)
    assert len(points) == len(same_points) and len(final) == len(same_final)
    merged = points.merge(same_points, on=["run_id", "step"])
    assert np.allclose(merged["via_x"], merged["via_y"]) and np.allclose(merged["value_x"], merged["value_y"])
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    a = fc.forecast(_with_general_loss(lad), at, "t", "exact_match", via="lm:perplexity", method="two_step").iloc[0]
    b = fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="two_step").iloc[0]
    assert a["via_predicted"] == pytest.approx(b["via_predicted"]) and a["predicted"] == pytest.approx(b["predicted"])
    assert ld.is_perplexity("word_perplexity") and not ld.is_perplexity("answer_nll")


@pytest.mark.parametrize("via, message", [
    ("lm:", "give a metric of the task"),
    ("nowhere:perplexity", "no measured rows for task 'nowhere'"),
    ("lm:bits_per_byte", "task 'lm' has no measured metric 'bits_per_byte'"),
])
def test_a_bad_loss_of_another_task_is_refused_with_one_line(lad, via, message):
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    with pytest.raises(ValueError, match=message) as e:
        fc.forecast(_with_general_loss(lad), at, "t", "exact_match", via=via, method="two_step")
    assert "\n" not in str(e.value)


PYTHIA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-evals" / "pythia-v1"


@pytest.mark.skipif(not PYTHIA.exists(), reason="../shared/data/pythia-evals is not beside the checkout")
def test_pythias_small_models_forecast_its_12b_model():
    """Real published curves: Pythia 70M-1.4B (every checkpoint) predict the 12B model's LAMBADA loss and its ARC-Easy
    and PIQA accuracy, each inside its 95% interval, by the two-step route through log LAMBADA perplexity."""
    from analysis.importers import import_lm_eval

    df = import_lm_eval(PYTHIA)
    ladder = df[df["n_params"] <= 1.5e9]
    assert set(ladder["model"]) == {"pythia-70m", "pythia-160m", "pythia-410m", "pythia-1.4b"}
    big = df[(df["model"] == "pythia-12b") & (df["step"] == df["step"].max())]
    at = big[["n_params", "tokens"]].drop_duplicates()
    loss = float(np.log(big[(big["task"] == "lambada_openai") & (big["metric"] == "perplexity")]["value"].iloc[0]))
    for task in ("arc_easy", "piqa"):
        r = fc.forecast(ladder, at, task, "acc", via="lambada_openai:perplexity", method="two_step").iloc[0]
        acc = float(big[(big["task"] == task) & (big["metric"] == "acc")]["value"].iloc[0])
        assert r["via_lo"] <= loss <= r["via_hi"] and abs(r["via_predicted"] - loss) < 0.1
        assert r["lo"] <= acc <= r["hi"] and abs(r["predicted"] - acc) < 0.05
        # the ladder's best is below the target's: the forecast goes past it, not to it
        best = ladder[(ladder["task"] == task) & (ladder["metric"] == "acc")]["value"].max()
        assert r["predicted"] > best


def test_cli_holds_larger_models_out_and_takes_a_loss_of_another_task(lad, tmp_path, capsys):
    from emergence.cli import main

    _with_general_loss(lad).to_parquet(tmp_path / "results.parquet")
    sizes = np.sort(lad["n_params"].unique())

    def run(*args):
        return main(["forecast", str(tmp_path), "--task", "t", "--metric", "exact_match", "--via", "lm:perplexity",
                     "--method", "two_step", "--n-boot", "50", "--at", f"n_params={sizes[-1]},tokens=3e9", *args])

    assert run("--max-params", str(sizes[-2])) == 0
    out = capsys.readouterr().out
    assert "inside their 95% interval over 2 origins" in out  # 5 sizes: origins 4 and 5
    snr = pd.read_csv(tmp_path / "forecast.csv")["snr"].iloc[0]
    assert f"signal-to-noise: {snr:.3g} (the final score spreads" in out
    bt = pd.read_csv(tmp_path / "forecast_backtest.csv")
    assert bt["n_params"].max() == sizes[-2]
    pred = pd.read_csv(tmp_path / "forecast.csv").iloc[0]
    assert pred["via_lo"] <= true_loss(sizes[-1], 3e9) <= pred["via_hi"]
    assert run("--max-params", "10") == 2
    assert "leaves no run in the ladder" in capsys.readouterr().err


def _floor_only(lad, seed=5):
    """The synthetic ladder with its score at chance everywhere (a binomial proportion of n at 0.25): the loss
    falls with size, the score has not begun to rise."""
    em = lad["metric"] == "exact_match"
    rng = np.random.default_rng(seed)
    return lad.assign(value=np.where(em, rng.binomial(500, 0.25, len(lad)) / 500, lad["value"]))


@pytest.mark.parametrize("seed", range(4))
def test_a_ladder_that_has_not_begun_the_rise_cannot_place_it(seed):
    """Scores at chance on every size: the sigmoid's rise lies beyond the ladder (or is a step fitted to the noise),
    and nothing in the data says where. A larger target's interval spans a new run at the ladder's edge up to the
    ceiling (given, else the metric's bound), on either route, and says so; a target within the ladder's reach, or
    a ladder that has risen, keeps its fitted interval."""
    lad = synthetic_ladder(np.random.default_rng(1))
    flat = _floor_only(lad, seed)
    top = lad["n_params"].max()
    at = pd.DataFrame({"n_params": [3 * top, top / 10], "tokens": [3e9, 3e8]})
    out = fc.forecast(flat, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=50)
    assert list(out["rise_unseen"]) == [True, False]
    assert out["hi"].iloc[0] == 1.0 and out["lo"].iloc[0] < 0.25 < out["hi"].iloc[1] < 0.35
    given = fc.forecast(flat, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=50, ceiling=0.9)
    assert given["hi"].iloc[0] == 0.9
    direct = fc.forecast(flat, at, "t", "exact_match", method="direct", n_boot=50)
    assert list(direct["rise_unseen"]) == [True, False] and direct["hi"].iloc[0] == 1.0
    risen = fc.forecast(lad, at.iloc[:1], "t", "exact_match", via="answer_nll", method="two_step", n_boot=50)
    assert not risen["rise_unseen"].iloc[0] and risen["hi"].iloc[0] < 0.99


@pytest.mark.parametrize("seed", range(3))
def test_an_onset_the_ladder_below_did_not_show_is_inside_an_unseen_interval(seed):
    """The backtest at the first size where runs leave the floor: fitted on floor-only sizes, a sigmoid would say
    'chance'; the interval instead reaches the ceiling, and the acquired runs lie inside it, marked rise_unseen."""
    lad = synthetic_ladder(np.random.default_rng(1))
    sizes = np.sort(lad["n_params"].unique())
    onset = lad["n_params"] >= sizes[4]
    flat = _floor_only(lad, seed)
    jumped = flat.assign(value=np.where(onset & (flat["metric"] == "exact_match"), 0.8, flat["value"]))
    bt = fc.forecast_backtest(jumped, "t", "exact_match", via="answer_nll", methods=["two_step"], n_boot=50)
    at_onset = bt[bt["n_params"] == sizes[4]]
    assert len(at_onset) == 6 and at_onset["rise_unseen"].all() and at_onset["inside"].all()
    assert (at_onset["predicted"] < 0.3).all()  # the fitted curve's own answer, kept as the point prediction


def test_targets_with_flops_need_none_on_a_ladder_that_separates_n_and_d(lad):
    """Whether a target lies past the ladder is judged on 6 N D, so a ladder without a flops column still forecasts
    targets that give one by L(N, D)."""
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9], "flops": [1.1e19]})
    out = fc.forecast(lad.assign(flops=np.nan), at, "t", "exact_match", via="answer_nll", method="two_step",
                      n_boot=50).iloc[0]
    assert out["method"].startswith("two_step (chinchilla") and out["lo"] <= out["predicted"] <= out["hi"]


def test_the_report_judges_the_intervals_of_a_ladder_that_had_seen_the_rise_apart(tmp_path):
    """Runs past sizes that had not begun the rise hold by spanning the range: the report counts them apart, and its
    warning reads the others (here 10 unseen, all inside; 10 seen, 5 inside: 75% overall, 50% where it counts)."""
    from analysis.report import build_document, load_sweep, render_md

    bt = pd.DataFrame({"task": "t", "metric": "exact_match", "method": "two_step", "laws": "two_step (x)",
                       "origin": np.repeat([1e6, 2e6], 10), "n_fit_sizes": 3, "run_id": [f"r{i}" for i in range(20)],
                       "n_params": 1e6, "tokens": 1e9, "predicted": 0.5, "lo": np.repeat([0.0, 0.4], 10),
                       "hi": np.repeat([1.0, 0.6], 10), "actual": 0.5, "error": 0.0, "rel_error": 0.0,
                       "inside": [True] * 15 + [False] * 5, "rise_unseen": [True] * 10 + [False] * 10})
    bt.to_csv(tmp_path / "forecast_backtest.csv", index=False)
    synthetic_ladder(np.random.default_rng(0), sizes=[1e6, 2e6], budgets=[1e9], seeds=1,
                     checkpoints=1).to_parquet(tmp_path / "results.parquet")
    md = render_md(build_document(load_sweep(tmp_path)), {})
    assert "75% of 20 runs inside their 95% prediction interval" in md
    assert "10 of them lay past sizes that had not begun the rise" in md
    assert "Of the other 10, 50% held, 0.2 wide on average." in md and "too narrow here" in md
    cov = fc.coverage(bt).iloc[0]
    assert (cov["n_rise_unseen"], cov["coverage_seen"], cov["mean_width_seen"]) == (10, 0.5, pytest.approx(0.2))


def test_every_interval_holds_its_own_point_on_the_committed_example():
    """Past the committed example's largest size, the bootstrap's refitted losses all lie below the loss the data
    fit gives (a skewed bootstrap near the bound 0): the percentile interval alone misses its point."""
    from pathlib import Path

    import analysis as an

    res = an.load_results(Path(__file__).resolve().parents[1] / "results" / "example")
    at = pd.DataFrame({"n_params": [2e4, 1e5], "tokens": [6e6, 6e6]})
    out = fc.forecast(res, at, "add2", "exact_match", via="answer_nll", method="two_step", ceiling=1.0, n_boot=100)
    for p, lo, hi in (("predicted", "lo", "hi"), ("via_predicted", "via_lo", "via_hi")):
        assert (out[lo] <= out[p]).all() and (out[p] <= out[hi]).all(), out[[p, lo, hi]]
    assert (out["hi"] <= 1).all() and (out["via_lo"] >= 0).all()


@pytest.mark.parametrize("args, message", [
    (["--method", "two_step"], "method two_step needs via"),
    (["--level", "1.5"], "the interval level must be between 0 and 1 (0.95 for 95%), got 1.5"),
    (["--n-boot", "0"], "n_boot must be a positive integer"),
])
def test_cli_arguments_no_forecast_can_use_are_refused_in_words(lad, tmp_path, capsys, args, message):
    from emergence.cli import main

    lad.to_parquet(tmp_path / "results.parquet")
    assert main(["forecast", str(tmp_path), "--task", "t", "--metric", "exact_match", "--at",
                 "n_params=6e8,tokens=3e9", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "forecast.csv").exists()


def test_cli_says_when_the_task_has_a_loss_to_forecast_through(lad, tmp_path, capsys):
    from emergence.cli import main

    lad.to_parquet(tmp_path / "results.parquet")
    assert main(["forecast", str(tmp_path), "--task", "t", "--metric", "exact_match", "--n-boot", "30", "--at",
                 "n_params=6e8,tokens=3e9"]) == 0
    assert "note: t also has answer_nll measured; --via answer_nll" in capsys.readouterr().out


def test_a_forecast_of_another_metric_keeps_the_rows_of_the_first(lad, tmp_path):
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    for metric in ("exact_match", "answer_nll", "exact_match"):
        fc.write_forecast(lad, tmp_path, at, "t", metric, method="direct", n_boot=30)
    pred, bt = pd.read_csv(tmp_path / "forecast.csv"), pd.read_csv(tmp_path / "forecast_backtest.csv")
    assert sorted(pred["metric"]) == ["answer_nll", "exact_match"]  # one row each: the rerun replaced its own
    assert set(bt["metric"]) == {"answer_nll", "exact_match"}
    assert not bt.duplicated(["metric", "method", "origin", "run_id"]).any()


def _ladder_rows(finals: dict, checkpoints: int = 1) -> pd.DataFrame:
    """A results table: {n_params: [final score of each run]}, each run with `checkpoints` checkpoints ending there
    (earlier ones 0.01 below, then the final)."""
    rows = []
    for n, finals_of in finals.items():
        for s, v in enumerate(finals_of):
            for k in range(checkpoints):
                step = 1000 * (k + 1)
                value = v - 0.01 * ((checkpoints - 1 - k) % 2)
                rows.append({"sweep": "s", "run_id": f"m{n}_s{s}", "model": f"m{n}", "n_params": n,
                             "n_params_nonembed": n, "n_layer": 1, "d_model": 8, "seed": s, "step": step,
                             "tokens": 1e6, "flops": 6e6 * n, "task": "t", "metric": "exact_match",
                             "value": value, "stderr": 0.01, "n": 256, "status": "ok"})
    return pd.DataFrame(rows)


def test_task_snr_takes_the_larger_noise_of_checkpoints_and_seeds_and_warns_below_five():
    """Signal: the spread of the sizes' mean final scores. Noise: a run's last checkpoints, or the seeds of a size,
    whichever scatter more; a task that one seed of the largest size learns is noise, not signal."""
    steady = _ladder_rows({1e4: [0.1, 0.1], 1e5: [0.5, 0.5], 1e6: [0.9, 0.9]}, checkpoints=5)
    s = ld.task_snr(steady, "t", "exact_match")
    assert s["signal"] == pytest.approx(0.8) and s["noise_from"] == "checkpoints"
    assert s["noise"] == pytest.approx(np.std([0.0, 0.01, 0.0, 0.01, 0.0], ddof=1))  # the last 5 alternate by 0.01
    assert s["snr"] == pytest.approx(0.8 / s["noise"]) and ld.snr_warning(s["snr"], "t") == ""
    one_seed = _ladder_rows({1e4: [0.0] * 6, 1e5: [0.0] * 6, 1e6: [0.0] * 5 + [0.9]})
    s = ld.task_snr(one_seed, "t", "exact_match")
    assert s["noise_from"] == "seeds" and s["signal"] == pytest.approx(0.15)
    assert s["noise"] == pytest.approx(np.sqrt(np.var([0.0] * 5 + [0.9], ddof=1) / 3))  # pooled over 3 sizes
    assert s["snr"] < ld.SNR_LOW and "below 5" in ld.snr_warning(s["snr"], "t")
    lone = _ladder_rows({1e4: [0.1], 1e5: [0.5], 1e6: [0.9]})  # one run per size, one checkpoint each
    s = ld.task_snr(lone, "t", "exact_match")
    assert s["noise_from"] == "none" and np.isnan(s["snr"])  # never 0, never infinite
    assert "could not be measured" in ld.snr_warning(s["snr"], "t")
    flat = _ladder_rows({1e4: [0.0, 0.0], 1e5: [0.0, 0.0], 1e6: [0.0, 0.0]}, checkpoints=1)
    s = ld.task_snr(flat, "t", "exact_match")
    assert s["signal"] == 0 and np.isnan(s["snr"])
    assert "the same at every size" in ld.snr_warning(s["snr"], "t", s["signal"])


def test_forecast_rows_carry_the_tasks_snr(lad):
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    r = fc.forecast(lad, at, "t", "exact_match", method="direct").iloc[0]
    s = ld.task_snr(lad, "t", "exact_match")
    assert r["snr"] == pytest.approx(s["snr"]) and r["snr_noise_from"] == s["noise_from"]
    assert np.isfinite(r["snr"]) and r["snr"] > 0


@pytest.mark.skipif(not PYTHIA.exists(), reason="../shared/data/pythia-evals is not beside the checkout")
def test_on_pythia_mmlu_is_noise_below_1_4b_and_the_tasks_that_forecast_well_are_signal():
    """Real published curves: on Pythia 70M-1.4B the MMLU subjects, at chance at these sizes, have a signal-to-noise
    ratio below 5 (47 of 57 subjects; all below 8), while ARC-Easy, PIQA, SciQ and LAMBADA, which the two-step
    forecast predicts (test above), are above 20 (Heineman et al. 2025 find MMLU noisy at small scale too)."""
    from analysis.importers import import_lm_eval

    df = import_lm_eval(PYTHIA)
    ladder = df[df["n_params"] <= 1.5e9]
    mmlu = [ld.task_snr(ladder, t, "acc")["snr"] for t in sorted(ladder["task"].unique())
            if str(t).startswith("hendrycksTest-")]
    solid = [ld.task_snr(ladder, t, "acc")["snr"] for t in ("arc_easy", "piqa", "sciq", "lambada_openai")]
    assert len(mmlu) == 57 and sum(s < ld.SNR_LOW for s in mmlu) >= 45 and max(mmlu) < 8
    assert min(solid) > 20


def test_the_report_warns_under_a_forecast_of_a_task_below_the_snr_it_states(lad):
    """The report's forecast section shows each target's signal-to-noise ratio, and a warning in words under a task
    whose ratio is below `SNR_LOW` (or unmeasured); none under one above it."""
    from types import SimpleNamespace

    from analysis.report.document import Para
    from analysis.report.view_sections import _forecast_blocks

    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    bt = fc.forecast_backtest(lad, "t", "exact_match", methods=["direct"], n_boot=20)
    pred = fc.forecast(lad, at, "t", "exact_match", method="direct", n_boot=20, backtest=bt)

    def warnings_in(pred):
        blocks = _forecast_blocks(SimpleNamespace(forecast_backtest=bt, forecast=pred))
        return [b for b in blocks if isinstance(b, Para) and "signal-to-noise ratio" in str(b)]

    assert pred["snr"].iloc[0] >= ld.SNR_LOW and warnings_in(pred) == []
    low = warnings_in(pred.assign(snr=2.5))
    assert len(low) == 1 and "Warning (exact_match): t: signal-to-noise ratio 2.5, below 5" in str(low[0])
    assert len(warnings_in(pred.assign(snr=float("nan")))) == 1
    assert warnings_in(pred.assign(snr=float("nan"), snr_noise_from=float("nan"))) == []  # a row from before SNR


def test_the_drift_quantile_is_split_conformal_and_says_when_the_backtest_is_too_short():
    q, how = fc.drift_quantile(np.arange(1.0, 20.0), 0.95)  # 19 scores: the 19th smallest
    assert q == 19.0 and how == "backtest: 19 runs"
    assert fc.drift_quantile(np.arange(1.0, 41.0), 0.95)[0] == 39.0  # ceil(41 x 0.95) = 39
    q, how = fc.drift_quantile(np.array([0.1, 0.3, np.nan, 0.2]), 0.95)
    assert q == 0.3 and "3 runs, too few" in how and "largest" in how
    q, how = fc.drift_quantile(np.empty(0), 0.95)
    assert np.isnan(q) and "widened 1.5x" in how


def test_a_calibrated_interval_adds_the_drift_to_each_side_of_the_bootstrap_and_stays_in_bounds():
    one = (np.array([0.5]), np.array([0.45]), np.array([0.55]))
    lo, hi = fc.calibrated(*one, distance=np.array([1.0]), drift=0.2, bounds=(0, 1))
    assert lo[0] == pytest.approx(0.25) and hi[0] == pytest.approx(0.75)
    lo, hi = fc.calibrated(*one, distance=np.array([0.02]), drift=0.2, bounds=(0, 1))  # D_MIN: 0.02 per side
    assert lo[0] == pytest.approx(0.43) and hi[0] == pytest.approx(0.57)
    lo, hi = fc.calibrated(*one, distance=np.array([3.0]), drift=0.5, bounds=(0, 0.9))
    assert (lo[0], hi[0]) == (0.0, 0.9)
    lo, hi = fc.calibrated(*one, distance=np.array([1.0]), drift=float("nan"), bounds=(0, 1))
    assert lo[0] == pytest.approx(0.425) and hi[0] == pytest.approx(0.575)
    assert fc.reach((0, 1), 0.8, True) == (0, 0.8) and fc.reach((0, np.inf), 0.1, False) == (0.1, np.inf)
    # the excess: how far a value lies outside its bootstrap interval, 0 inside
    assert list(fc.excess([0.4] * 3, [0.6] * 3, [0.3, 0.5, 0.75])) == pytest.approx([0.1, 0.0, 0.15])


def test_forecast_rows_say_what_their_interval_rests_on(lad):
    at = pd.DataFrame({"n_params": [6e8], "tokens": [3e9]})
    bt = fc.forecast_backtest(lad, "t", "exact_match", via="answer_nll", methods=["two_step"], n_boot=50)
    r = fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=50, backtest=bt).iloc[0]
    raw = fc.forecast(lad, at, "t", "exact_match", via="answer_nll", method="two_step", n_boot=50,
                      calibrate=False).iloc[0]
    scores = fc.drift_scores(bt, "two_step")
    assert r["interval_from"] == f"backtest: {len(scores)} runs, too few for its quantile: the largest excess"
    assert r["drift"] == pytest.approx(scores.max())
    assert r["distance"] == pytest.approx(np.log10(6 * 6e8 * 3e9 / (6 * lad["n_params"].max() * 3e9)), abs=1e-9)
    half = r["drift"] * max(r["distance"], fc.D_MIN)
    assert r["lo"] == pytest.approx(max(0, raw["lo"] - half)) and r["hi"] == pytest.approx(min(1, raw["hi"] + half))
    assert (r["lo_boot"], r["hi_boot"]) == (raw["lo"], raw["hi"])
    assert raw["interval_from"] == "bootstrap" and np.isnan(raw["drift"])


def log_power_ladder(seed: int = 0, n: int = 1000) -> pd.DataFrame:
    """Runs whose exact match is exp(-(E + A C^-alpha)) in compute C = 6 N D, binomial over n examples: the law
    direct_log fits (Krajewski et al. 2025), from 0.2 at the smallest size to 0.86 at the largest."""
    rng = np.random.default_rng(seed)
    rows = []
    for N in np.logspace(6, 8, 6):
        for s in range(2):
            D = 20 * N
            a = rng.binomial(n, log_power_truth(N, D)) / n
            rows.append(dict(sweep="l", run_id=f"N{N:.0f}_s{s}", model=f"N{N:.0f}", n_params=int(N),
                             n_params_nonembed=int(N), n_layer=1, d_model=1, seed=s, step=1, tokens=int(D),
                             flops=6 * N * D, task="t", metric="exact_match", value=a,
                             stderr=np.sqrt(a * (1 - a) / n), n=n, status="ok"))
    return pd.DataFrame(rows)


def log_power_truth(N, D):
    return np.exp(-(0.05 + 2.6e4 * (6 * N * D) ** -0.3))


def test_direct_log_recovers_a_power_law_in_log_accuracy_and_auto_chooses_it_saying_why():
    lad = log_power_ladder()
    at = pd.DataFrame({"n_params": [3e8], "tokens": [6e9]})
    out = fc.forecast(lad, at, "t", "exact_match", method="direct_log")
    r, truth = out.iloc[0], log_power_truth(3e8, 6e9)
    assert r["method"].startswith("direct_log") and r["chosen_by"] == "given" and not r["rise_unseen"]
    assert abs(r["predicted"] - truth) < 0.02 and r["lo"] <= truth <= r["hi"] and 0 <= r["lo"] <= r["hi"] <= 1
    # a sigmoid in compute bends toward a ceiling of its own: on this ladder the backtest prefers direct_log
    bt = fc.forecast_backtest(lad, "t", "exact_match", n_boot=100)
    assert set(bt["method"]) == {"direct", "direct_log"}  # two_step needs a loss to go through
    mae = bt.assign(e=bt["error"].abs()).groupby("method")["e"].mean()
    auto = fc.forecast(lad, at, "t", "exact_match", backtest=bt).iloc[0]
    want = mae.idxmin()
    assert want == "direct_log" and auto["method"].startswith(want) and f"{mae[want]:.3g} over" in auto["chosen_by"]
    assert f"{mae.drop(want).index[0]} {mae.drop(want).iloc[0]:.3g}" in auto["chosen_by"]


def test_direct_log_needs_a_bounded_metric_and_takes_scores_at_the_floor():
    lad = log_power_ladder()
    nll = lad.assign(metric="answer_nll", value=-np.log(lad["value"]))
    with pytest.raises(ValueError, match="direct_log needs a metric bounded on both sides"):
        fc.forecast(nll, pd.DataFrame({"n_params": [3e8], "tokens": [6e9]}), "t", "answer_nll", method="direct_log")
    # a lower-is-better metric takes its floor above its ceiling; a floor at the ceiling leaves no room
    dist = lad.assign(metric="edit_distance", value=1 - lad["value"])
    at = pd.DataFrame({"n_params": [3e8], "tokens": [6e9]})
    out = fc.forecast(dist, at, "t", "edit_distance", method="direct_log", floor=1.0, ceiling=0.0).iloc[0]
    assert abs(out["predicted"] - (1 - log_power_truth(3e8, 6e9))) < 0.02 and 0 <= out["lo"] <= out["hi"] <= 1
    with pytest.raises(ValueError, match="must lie above the ceiling"):
        fc.forecast(dist, at, "t", "edit_distance", method="direct_log", floor=0.0, ceiling=0.9)
    with pytest.raises(ValueError, match="needs room between the floor"):
        fc.forecast(lad, at, "t", "exact_match", method="direct_log", floor=1.0)
    # runs at the floor have no logarithm: half an example's worth stands in, and the forecast stays finite
    floored = lad.assign(value=np.where(lad["n_params"] < 1e7, 0.0, lad["value"]))
    out = fc.forecast(floored, pd.DataFrame({"n_params": [3e8], "tokens": [6e9]}), "t", "exact_match",
                      method="direct_log")
    assert np.isfinite(out[["predicted", "lo", "hi"]].to_numpy()).all()


def test_the_method_choice_ties_to_the_first_method_and_says_when_nothing_was_predicted():
    bt = pd.DataFrame({"method": ["direct", "two_step", "direct", "two_step"], "origin": [1.0, 1.0, 2.0, 2.0],
                       "run_id": ["a", "a", "b", "b"], "error": [0.1, -0.1, 0.2, 0.2]})
    assert fc.method_choice(bt)[0] == "two_step"  # equal errors: METHODS' order (not the names')
    bt = bt.assign(method=["direct_log", "direct", "direct_log", "direct"])
    assert fc.method_choice(bt.assign(error=[0.05, 0.1, 0.05, 0.1]))[0] == "direct_log"
    method, why = fc.method_choice(bt.assign(error=np.nan), default="direct")
    assert method == "direct" and "predicted no run" in why
