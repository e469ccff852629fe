"""Property tests over the analysis entry points not covered in test_analysis_properties.py (which has flag_emergence,
flag_curve, fit_law on arbitrary points and load_results on garbage files): `validate`, `flag_transitions`,
`backtest`, `resolution_curves`, `import_csv` and `import_lm_eval`, fed random and malformed input. Each gives a
result of the documented shape or a ValueError with a message, never another exception.

Malformations are the ones real tables have: a dropped column, text or None in a numeric column, a categorical
column (how pyarrow returns dictionary-encoded strings), a repeated index, infinities, negative sizes, an unknown
status or metric, and an empty table.
"""
import json
import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from analysis.backtest import backtest
from analysis.importers import import_csv, import_lm_eval
from analysis.resolution import resolution_curves
from analysis.schema import COLUMNS, METRICS, STATUSES, validate
from analysis.views import flag_transitions

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VERDICTS = {"emergent", "smooth", "flat", "inconclusive"}
SIZES = [1_000, 4_000, 16_000, 64_000, 256_000, 1_000_000]
FAST = {"n_boot": 20}  # these tests are about robustness, not statistical power
odd_floats = st.one_of(st.floats(-5, 5), st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e300, -1e-300]))


def value_error_or(fn, *args, **kwargs):
    """Call fn; a ValueError must carry a message. Returns the result, or None after a ValueError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are allowed (a skipped fit, say); exceptions other than ValueError
        try:
            out = fn(*args, **kwargs)
        except ValueError as e:
            assert str(e).strip(), f"{fn.__name__} raised a ValueError without a message"
            event("ValueError")  # pytest --hypothesis-show-statistics shows how often each path ran
            return None
    event("result")
    return out


@st.composite
def results_tables(draw, max_rows=40):
    """Schema-shaped tables: random sizes, seeds, checkpoints, tasks, metrics, statuses and values."""
    n = draw(st.integers(0, max_rows))
    metrics = draw(st.lists(st.sampled_from(sorted(METRICS)), min_size=1, max_size=2, unique=True))
    rows = []
    for _ in range(n):
        size, seed, step = draw(st.sampled_from(SIZES)), draw(st.integers(0, 1)), draw(st.sampled_from([0, 1, 8, 64]))
        status = draw(st.sampled_from(["ok"] * 5 + sorted(STATUSES)))
        value = draw(odd_floats) if status in ("ok", "imported") else np.nan
        rows.append(dict(sweep="s", run_id=f"r{size}_{seed}", model=f"m{size}", n_params=size,
                         n_params_nonembed=size // 2, n_layer=1, d_model=16, seed=seed, step=step,
                         tokens=1000.0 * step, flops=6000.0 * step * size, task=draw(st.sampled_from(["a", "b"])),
                         metric=draw(st.sampled_from(metrics)), value=value,
                         stderr=draw(st.one_of(st.just(np.nan), st.floats(0, 1))), n=64, status=status))
    return pd.DataFrame(rows, columns=list(COLUMNS))


@st.composite
def malformed(draw, tables):
    """A table from `tables`, damaged in one of the ways real tables are."""
    df = draw(tables)
    action = draw(st.sampled_from(["none", "drop", "text", "none_cell", "category", "dup_index", "inf", "negative",
                                   "status", "metric", "empty", "bool"]))
    if action == "none" or (len(df) == 0 and action != "drop"):
        return df
    col = draw(st.sampled_from(list(df.columns)))
    first = df.index[0] if len(df) else None
    if action == "drop":
        return df.drop(columns=[col])
    if action == "text":
        df[col] = df[col].astype(object)
        df.loc[first, col] = draw(st.text(max_size=4))
    elif action == "none_cell":
        df[col] = df[col].astype(object)
        df.loc[first, col] = None
    elif action == "category":
        df[col] = df[col].astype("category")
    elif action == "dup_index":
        df.index = [0] * len(df)
    elif action == "inf":
        numeric = [c for c, t in COLUMNS.items() if t != "string" and c in df]
        col = draw(st.sampled_from(numeric))
        df[col] = df[col].astype(float)  # an infinity can only sit in a float column
        df.loc[first, col] = draw(st.sampled_from([np.inf, -np.inf]))
    elif action == "negative":
        df["n_params"] = -df["n_params"]
    elif action == "status":
        df.loc[first, "status"] = draw(st.text(max_size=6))
    elif action == "metric":
        df.loc[first, "metric"] = draw(st.text(max_size=6))
    elif action == "empty":
        df = df.iloc[:0]
    elif action == "bool":
        df[col] = True
    return df


# ---------------------------------------------------------------------------------------------------------------------
# The results table itself.

def one_run(values, stderr, **row):
    """A results table of one run's checkpoints: `values` at steps 1, 2, 3, ... (for the explicit examples)."""
    base = dict(sweep="s", run_id="r", model="m", n_params=1000, n_params_nonembed=500, n_layer=1, d_model=16,
                seed=0, tokens=0.0, flops=0.0, task="a", metric="exact_match", n=64, status="ok")
    return pd.DataFrame([{**base, "step": i + 1, "tokens": 1e3 * (i + 1), "value": v, "stderr": e, **row}
                         for i, (v, e) in enumerate(zip(values, stderr))], columns=list(COLUMNS))


@SETTINGS
@given(malformed(results_tables()))
@example(one_run([0.5], [0.1], step=np.inf))  # an infinite checkpoint number
def test_validate_returns_the_schema_or_refuses_clearly(df):
    out = value_error_or(validate, df)
    if out is None:
        return
    assert len(out) == len(df)
    assert {c: str(out[c].dtype) for c in COLUMNS} == {c: ("string" if t == "string" else t) for c, t in
                                                       COLUMNS.items()}
    assert set(out["status"]) <= set(STATUSES)
    measured = out["status"].isin(["ok", "imported"])
    assert out.loc[~measured, "value"].isna().all()  # a value that was not measured is NaN


# ---------------------------------------------------------------------------------------------------------------------
# Views and backtests.

@settings(SETTINGS, max_examples=15)  # each table holds several within-run curves, each fitted and simulated
@given(malformed(results_tables(max_rows=16)), st.sampled_from(["tokens", "step", "flops"]))
@example(one_run([1e300, 0.0, 2.0, -1e300], [np.nan, 1.0, np.nan, np.nan]), "tokens")  # a range near float's limit
def test_flag_transitions_on_random_and_malformed_tables(df, x):
    out = value_error_or(flag_transitions, df, x=x, **FAST)
    if out is None:
        return
    assert {"run_id", "task", "metric", "verdict", "evidence"} <= set(out.columns)
    assert set(out["verdict"]) <= VERDICTS
    assert not out.duplicated(["run_id", "task", "metric"]).any()


@SETTINGS
@given(malformed(results_tables()), st.sampled_from(["power", "power", "logistic", "linear_log", "saturating",
                                                     "hinge", "chinchilla", "nonsense"]),
       st.sampled_from(["n_params", "flops", "tokens", "missing"]), st.sampled_from([1, 1, 1, 2, 0]))
def test_backtest_on_random_and_malformed_tables(df, law, x, holdout):
    out = value_error_or(backtest, df, law, x, holdout=holdout, n_boot=5)
    if out is None:
        return
    assert {"task", "metric", "law", "x_value", "prediction", "lo", "hi", "actual", "inside"} <= set(out.columns)
    ok = out["prediction"].notna()
    assert (out.loc[ok, "lo"].isna() | (out.loc[ok, "lo"] <= out.loc[ok, "hi"])).all()


@st.composite
def instance_tables(draw):
    """Per-example answer log-probabilities of a few runs, with the sizes either in the table or in a runs table."""
    n = draw(st.integers(0, 40))
    rows = []
    for _ in range(n):
        size = draw(st.sampled_from(SIZES[:4]))
        rows.append(dict(run_id=f"r{size}_{draw(st.integers(0, 1))}", step=draw(st.sampled_from([1, 8])),
                         task=draw(st.sampled_from(["a", "b"])), example_id=draw(st.integers(0, 5)),
                         answer_logprob=draw(st.one_of(st.floats(-50, 0), st.sampled_from([0.0, -np.inf, np.nan]))),
                         n_params=size))
    df = pd.DataFrame(rows, columns=["run_id", "step", "task", "example_id", "answer_logprob", "n_params"])
    runs = None
    if draw(st.booleans()):
        runs = df[["run_id", "n_params"]].drop_duplicates()
        df = df.drop(columns=["n_params"])
    return df, runs


@st.composite
def malformed_instances(draw):
    df, runs = draw(instance_tables())
    action = draw(st.sampled_from(["none", "none", "drop", "text", "dup_index", "runs_missing", "category",
                                   "positive"]))
    col = draw(st.sampled_from(list(df.columns)))
    if action == "drop":
        df = df.drop(columns=[col])
    elif action == "text" and len(df):
        df[col] = df[col].astype(object)
        df.loc[df.index[0], col] = draw(st.text(max_size=4))
    elif action == "dup_index":
        df.index = [0] * len(df)
    elif action == "runs_missing" and runs is not None:
        runs = runs.iloc[:len(runs) // 2]
    elif action == "category":
        df[col] = df[col].astype("category")
    elif action == "positive" and len(df):
        df.loc[df.index[0], "answer_logprob"] = 0.5  # not a log-probability
    return df, runs


@SETTINGS
@given(malformed_instances())
def test_resolution_curves_on_random_and_malformed_instances(pair):
    instances, runs = pair
    out = value_error_or(resolution_curves, instances, "n_params", runs=runs, n_boot=50)
    if out is None:
        return
    assert {"task", "shape", "slope", "curvature"} <= set(out.columns)
    assert not out.duplicated(["task"]).any()


# ---------------------------------------------------------------------------------------------------------------------
# Importers: any file and any mapping.

cells = st.one_of(st.text(max_size=6), st.integers(-10**6, 10**9), odd_floats, st.none())


@st.composite
def score_files(draw):
    """A published-scores table: columns of the usual kinds (task, metric, score, size), sometimes with a bad cell."""
    n = draw(st.integers(0, 10))
    df = pd.DataFrame({"Task": draw(st.lists(st.sampled_from(["arc", "piqa", "<b>x</b>"]), min_size=n, max_size=n)),
                       "Metric": draw(st.lists(st.sampled_from(["acc", "exact_match", "perplexity"]), min_size=n,
                                               max_size=n)),
                       "Score": draw(st.lists(odd_floats, min_size=n, max_size=n)),
                       "Params": draw(st.lists(st.sampled_from([70e6, 160e6, 1.4e9]), min_size=n, max_size=n))},
                      dtype=object)
    if n and draw(st.booleans()):
        df.iloc[draw(st.integers(0, n - 1)), draw(st.integers(0, 3))] = draw(cells)
    return df


@st.composite
def csv_mappings(draw):
    """{schema column: file column} and constants; usually complete, sometimes missing or naming what is not there."""
    mapping, constants = {}, {}
    for need, column in (("task", "Task"), ("metric", "Metric"), ("value", "Score")):
        how = draw(st.sampled_from(["column", "column", "constant", "absent", "wrong"]))
        if how == "column":
            mapping[need] = column
        elif how == "wrong":
            mapping[need] = draw(st.sampled_from(["Params", "Nope", "Task"]))
        elif how == "constant":
            constants[need] = draw(st.sampled_from(["acc", "exact_match", "t", 0.5]))
    mapping.update(draw(st.dictionaries(st.sampled_from(["n_params", "model", "seed", "step", "bogus", "status"]),
                                        st.sampled_from(["Params", "Task", "Score"]), max_size=2)))
    return mapping, constants


@SETTINGS
@given(score_files(), csv_mappings(), st.sampled_from([".csv", ".tsv", ".parquet"]))
def test_import_csv_on_random_files_and_mappings(tmp_path_factory, df, mapping_constants, suffix):
    mapping, constants = mapping_constants
    path = tmp_path_factory.mktemp("csv") / f"scores{suffix}"
    if suffix == ".parquet":
        df.astype(str).to_parquet(path)
    else:
        df.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    out = value_error_or(import_csv, path, mapping, constants=constants)
    if out is None:
        return
    assert len(out) == len(df) and list(out.columns[:len(COLUMNS)]) == list(COLUMNS)
    validate(out)  # what an importer returns is a valid results table


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=5)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=12)
metric_entries = st.dictionaries(st.sampled_from(["acc", "acc,none", "acc_stderr", "acc_stderr,none", "acc_norm",
                                                  "ppl", "word_perplexity", "alias", "weird"]),
                                 st.one_of(st.floats(0, 1), st.floats(0, 1), st.floats(allow_nan=False),
                                           st.sampled_from(["N/A", "", "0.5"]), st.none(), json_values),
                                 min_size=1, max_size=5)
harness_like = st.fixed_dictionaries(
    {"results": st.dictionaries(st.sampled_from(["arc_easy", "piqa", "lambada_openai", "<i>", ""]), metric_entries,
                                max_size=3)},
    optional={"config": st.dictionaries(st.sampled_from(["model", "model_args", "model_name"]), json_values),
              "versions": json_values, "n-samples": json_values, "higher_is_better": json_values,
              "model_name": json_values})


@SETTINGS
@given(st.one_of(json_values, harness_like, harness_like), st.sampled_from(["results.json", "70m_step1000.json"]))
def test_import_lm_eval_on_random_json(tmp_path_factory, doc, name):
    path = tmp_path_factory.mktemp("lm_eval") / name
    path.write_text(json.dumps(doc))
    out = value_error_or(import_lm_eval, path)
    if out is None:
        return
    validate(out)
    assert (out["status"].isin(["imported", "not_measured"])).all()
