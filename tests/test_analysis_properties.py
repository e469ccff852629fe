"""Property tests: random and malformed tables give a result or one clear ValueError, never another exception."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.fit import FitResult, fit_law
from analysis.flags import FLAG_COLUMNS, flag_curve, flag_emergence
from analysis.io import load_results
from analysis.schema import COLUMNS, METRICS, STATUSES

# n_boot=20 (the fewest draws the width test takes): these tests are about robustness, not statistical power
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)
VERDICTS = {"emergent", "smooth", "flat", "inconclusive"}
SIZES = [1_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000]
weird_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3),
                         st.sampled_from([0.0, -1.0, 1e300, -1e-300]))


@st.composite
def results_tables(draw):
    """Schema-valid tables with random sizes, seeds, checkpoints, statuses and values (NaN where not measured)."""
    n = draw(st.integers(0, 60))
    metrics = draw(st.lists(st.sampled_from(sorted(METRICS)), min_size=1, max_size=3, unique=True))
    rows = []
    for i in range(n):
        size = draw(st.sampled_from(SIZES))
        seed = draw(st.integers(0, 2))
        status = draw(st.sampled_from(["ok"] * 6 + sorted(STATUSES)))
        value = draw(st.floats(-2, 5)) if status in ("ok", "imported") else np.nan
        if status == "ok" and draw(st.booleans()) and draw(st.booleans()):
            value = np.nan  # an ok row may still hold NaN (left out, not an error)
        rows.append(dict(sweep="s", run_id=f"r{size}_{seed}", model="m", n_params=size, n_params_nonembed=size,
                         n_layer=2, d_model=32, seed=seed, step=draw(st.sampled_from([10, 20])), tokens=1e5,
                         flops=6e5 * size, task=draw(st.sampled_from(["a", "b"])),
                         metric=draw(st.sampled_from(metrics)), value=value,
                         stderr=draw(st.one_of(st.just(np.nan), st.floats(0, 1))), n=100, status=status))
    return pd.DataFrame(rows, columns=list(COLUMNS))


@SETTINGS
@given(results_tables(), st.sampled_from(["n_params", "flops", "step"]))
def test_random_results_tables_flag_or_refuse_clearly(df, x):
    try:
        out = flag_emergence(df, x=x, n_boot=20)
    except ValueError as e:
        assert str(e)
        return
    assert list(out.columns[:len(FLAG_COLUMNS)]) == FLAG_COLUMNS
    assert set(out["verdict"]) <= VERDICTS
    assert not out.duplicated(["task", "metric"]).any()
    emergent = out[out["verdict"] == "emergent"]
    assert (emergent["jump_lo"] <= emergent["jump_at"]).all() and (emergent["jump_at"] <= emergent["jump_hi"]).all()
    assert out["evidence"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    fitted = out[np.isfinite(out["width"].astype(float))]
    assert (fitted["width_lo"] <= fitted["width"]).all() and (fitted["width"] <= fitted["width_hi"]).all()
    for r in fitted.itertuples():  # every fitted floor and ceiling inside its metric's bounds
        spec = METRICS[r.metric]
        for v in (r.floor, r.ceiling):
            assert spec.lower_bound is None or v >= spec.lower_bound - 1e-9, (r.metric, v)
            assert spec.upper_bound is None or v <= spec.upper_bound + 1e-9, (r.metric, v)


@st.composite
def malformed_tables(draw):
    df = draw(results_tables())
    action = draw(st.sampled_from(["drop", "text", "status", "metric", "inf", "negative", "object", "none"]))
    if len(df) == 0 or action == "none":
        return df
    col = draw(st.sampled_from(list(COLUMNS)))
    if action == "drop":
        return df.drop(columns=[col])
    if action == "text":
        df[col] = df[col].astype(object)
        df.loc[df.index[0], col] = draw(st.text(max_size=5))
    elif action == "status":
        df.loc[df.index[0], "status"] = draw(st.text(max_size=8))
    elif action == "metric":
        df.loc[df.index[0], "metric"] = draw(st.text(max_size=8))
    elif action == "inf":
        df.loc[df.index[0], draw(st.sampled_from(["value", "tokens", "flops", "stderr"]))] = np.inf
    elif action == "negative":
        df["n_params"] = -df["n_params"]
    elif action == "object":
        df[col] = [object()] * len(df)
    return df


@SETTINGS
@given(malformed_tables())
def test_malformed_tables_give_a_result_or_a_value_error(df):
    try:
        out = flag_emergence(df, n_boot=20)
    except ValueError as e:
        assert str(e)
    else:
        assert set(out["verdict"]) <= VERDICTS


@SETTINGS
@given(st.lists(st.tuples(st.one_of(st.floats(1.0, 1e9), weird_floats), weird_floats), max_size=14),
       st.sampled_from(["power", "logistic", "saturating", "hinge", "linear_log", "bnsl"]),
       st.sampled_from(["l2", "huber"]))
def test_fit_law_on_arbitrary_points(points, law, loss):
    df = pd.DataFrame(points, columns=["x", "y"])
    try:
        fit = fit_law(df, law, "x", "y", loss=loss, n_boot=5)
    except ValueError as e:
        assert str(e)
        return
    assert isinstance(fit, FitResult) and set(fit.params) and fit.n >= len(fit.params) + 1
    assert fit.predict(np.array([1.0, 10.0])).shape == (2,)


@SETTINGS
@given(st.lists(weird_floats, max_size=12), st.lists(weird_floats, max_size=12), st.booleans())
def test_flag_curve_on_arbitrary_arrays(xs, ys, hib):
    m = min(len(xs), len(ys))
    try:
        r = flag_curve(np.array(xs[:m]), np.array(ys[:m]), higher_is_better=hib, n_boot=20)
    except ValueError as e:
        assert str(e)
        return
    assert r["verdict"] in VERDICTS and isinstance(r["evidence"], str)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.binary(max_size=200), st.sampled_from([".csv", ".parquet", ".txt"]))
def test_load_results_refuses_garbage_files_clearly(tmp_path_factory, blob, suffix):
    p = tmp_path_factory.mktemp("garbage") / f"results{suffix}"
    p.write_bytes(blob)
    with pytest.raises(ValueError, match="results"):
        load_results(p)


def test_load_results_reads_a_table_a_folder_and_names_the_problem(tmp_path):
    df = pd.DataFrame([dict(sweep="s", run_id="r", model="m", n_params=10, n_params_nonembed=8, n_layer=1,
                            d_model=8, seed=0, step=1, tokens=1.0, flops=6.0, task="t", metric="exact_match",
                            value=0.5, stderr=0.1, n=10, status="ok")])
    df.to_parquet(tmp_path / "results.parquet")
    df.to_csv(tmp_path / "t.csv", index=False)
    for path in (tmp_path, tmp_path / "results.parquet", tmp_path / "t.csv"):
        out = load_results(path)
        assert len(out) == 1 and str(out["n_params"].dtype) == "Int64"
    df.drop(columns=["metric"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv.*'metric'"):
        load_results(tmp_path / "bad.csv")
    (tmp_path / "empty_sweep").mkdir()
    with pytest.raises(ValueError, match="no results.parquet"):
        load_results(tmp_path / "empty_sweep")
    with pytest.raises(ValueError, match="no such file"):
        load_results(tmp_path / "missing.parquet")
