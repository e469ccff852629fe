"""Importers: lm-evaluation-harness JSON (both layouts, and Pythia's published folder) and mapped CSV tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.importers import PYTHIA_SIZES, PYTHIA_TOKENS_PER_STEP, import_csv, import_lm_eval, pythia_size

FIX = Path(__file__).parent / "fixtures"


def one(df: pd.DataFrame, **where) -> pd.Series:
    """The single row matching every column=value given."""
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        mask &= (df[k] == v).to_numpy(dtype=bool)
    rows = df[mask]
    assert len(rows) == 1, f"expected one row for {where}, found {len(rows)}"
    return rows.iloc[0]


# --- Pythia size table -----------------------------------------------------------------------------------------

def test_pythia_sizes_match_the_paper():
    # Biderman et al. 2023, Table 1 (non-embedding parameters, layers, d_model)
    assert PYTHIA_SIZES.loc["pythia-70m", "n_params_nonembed"] == 18_915_328
    assert PYTHIA_SIZES.loc["pythia-1b", "n_layer"] == 16
    assert PYTHIA_SIZES.loc["pythia-12b", "d_model"] == 5120
    assert PYTHIA_SIZES.loc["pythia-6.9b", "n_params_nonembed"] == 6_444_163_072
    # embeddings come on top, so the total is larger for every size, and sizes are in order
    assert (PYTHIA_SIZES["n_params"] > PYTHIA_SIZES["n_params_nonembed"]).all()
    assert PYTHIA_SIZES["n_params"].is_monotonic_increasing
    # untied embedding and unembedding: total - nonembed = 2 * vocab * d_model, with the released models' padded
    # vocabularies (50,304; 50,432 for 6.9B and 50,688 for 12B, padded for model parallelism)
    vocab = pd.Series(50304, index=PYTHIA_SIZES.index)
    vocab["pythia-6.9b"], vocab["pythia-12b"] = 50432, 50688
    diff = PYTHIA_SIZES["n_params"] - PYTHIA_SIZES["n_params_nonembed"]
    assert (diff == 2 * vocab * PYTHIA_SIZES["d_model"]).all()
    assert PYTHIA_TOKENS_PER_STEP * 143_000 == 299_892_736_000  # the paper's total training tokens


@pytest.mark.parametrize("name,expected", [
    ("pythia-160m", "pythia-160m"), ("EleutherAI/pythia-1.4b-deduped", "pythia-1.4b"),
    ("EleutherAI/pythia-v1.1-70m", "pythia-70m"), ("pythia-350m", "pythia-410m"), ("1b", "pythia-1b"),
])
def test_pythia_size_lookup(name, expected):
    assert pythia_size(name).name == expected


def test_pythia_size_unknown_is_none():
    assert pythia_size("gpt2") is None
    assert pythia_size("pythia-3b") is None


# --- lm-evaluation-harness, current layout ---------------------------------------------------------------------

def test_new_layout_values_and_identity():
    df = import_lm_eval(FIX / "lm_eval" / "new_layout")
    schema.validate(df)
    r = one(df, run_id="EleutherAI/pythia-160m", task="arc_easy", metric="acc")
    assert r["value"] == pytest.approx(0.4360) and r["stderr"] == pytest.approx(0.0102)
    assert r["step"] == 3000  # from revision=step3000 in model_args
    assert r["n_params"] == 162_322_944 and r["n_params_nonembed"] == 85_056_000
    assert r["tokens"] == 3000 * 2_097_152
    assert r["flops"] == pytest.approx(6 * 162_322_944 * 3000 * 2_097_152)
    assert r["n"] == 2376 and r["status"] == "imported"
    assert one(df, task="lambada_openai", metric="perplexity")["value"] == pytest.approx(38.25)


def test_new_layout_filters_shots_and_missing_values():
    df = import_lm_eval(FIX / "lm_eval" / "new_layout" / "results_2024-06-01T10-00-00.json")
    strict = one(df, task="gsm8k/strict-match/5shot", metric="exact_match")
    assert strict["value"] == pytest.approx(0.0152)
    assert math.isnan(strict["stderr"])  # "N/A" in the file
    assert one(df, task="gsm8k/flexible-extract/5shot", metric="exact_match")["stderr"] == pytest.approx(0.0041)
    tox = one(df, task="toxigen", metric="acc")
    assert math.isnan(tox["value"]) and tox["status"] == "not_measured"  # null is never read as 0
    assert "alias" not in set(df["metric"])


def test_new_layout_other_model_has_no_size_unless_given():
    df = import_lm_eval(FIX / "lm_eval" / "new_layout" / "results_other_model.json")
    assert df["n_params"].isna().all() and df["step"].isna().all() and df["tokens"].isna().all()
    # word_perplexity is not in our registry: its direction comes from the harness's own metric table
    assert one(df, task="piqa", metric="word_perplexity")["value"] == pytest.approx(12.5)
    assert schema.higher_is_better("word_perplexity") is False
    df2 = import_lm_eval(FIX / "lm_eval" / "new_layout" / "results_other_model.json", n_params=12345,
                         model="tiny", metrics=["acc"])
    assert set(df2["metric"]) == {"acc"}
    assert (df2["n_params"] == 12345).all() and (df2["run_id"] == "tiny").all()


# --- lm-evaluation-harness, older flat layout ------------------------------------------------------------------

def test_old_layout_flat_keys_and_unknown_metrics():
    path = FIX / "lm_eval" / "old_layout" / "gpt2_results.json"
    with pytest.warns(UserWarning, match="mystery_score"):
        df = import_lm_eval(path)
    assert df.attrs["skipped_metrics"] == ["mystery_score"]
    assert "made_up_task" not in set(df["task"])
    assert one(df, task="piqa", metric="acc_norm")["value"] == pytest.approx(0.6245)
    ppl = one(df, task="lambada_openai", metric="perplexity")  # "ppl" in the old layout
    assert ppl["value"] == pytest.approx(40.06) and ppl["stderr"] == pytest.approx(1.48)
    assert one(df, task="crows_pairs_english", metric="likelihood_difference")["value"] == pytest.approx(3.52)
    assert (df["run_id"] == "gpt2").all() and df["step"].isna().all()


# --- Pythia's published evals folder ---------------------------------------------------------------------------

def test_pythia_folder_layout():
    df = import_lm_eval(FIX / "pythia_evals")
    schema.validate(df)
    assert set(df["run_id"]) == {"pythia-70m", "pythia-1.4b"}
    assert set(df.loc[df["run_id"] == "pythia-70m", "step"]) == {0, 143000}
    # published values (evals/pythia-v1/pythia-70m/zero-shot/70m_step143000.json)
    lam = one(df, run_id="pythia-70m", step=143000, task="lambada_openai", metric="acc")
    assert lam["value"] == pytest.approx(0.18455268775470599)
    assert lam["tokens"] == 143000 * 2_097_152 and lam["n_params"] == 70_426_624
    assert lam["n_layer"] == 6 and lam["d_model"] == 512
    piqa = one(df, run_id="pythia-1.4b", step=1000, task="piqa", metric="acc")
    assert piqa["value"] == pytest.approx(0.5680087051142546) and piqa["n_params"] == 1_414_647_808
    # the five-shot folder is kept apart from zero-shot
    assert one(df, run_id="pythia-70m", task="arc_easy/5shot", metric="acc")["value"] == pytest.approx(0.391)
    assert one(df, run_id="pythia-70m", step=143000, task="arc_easy", metric="acc")["value"] == pytest.approx(
        0.37373737373737376)
    # step 0 is kept: tokens 0, the untrained model's score
    zero = one(df, run_id="pythia-70m", step=0, task="arc_easy", metric="acc")
    assert zero["tokens"] == 0 and zero["value"] == pytest.approx(0.2529)
    assert (df["status"] == "imported").all() and (df["sweep"] == "pythia_evals").all()


# --- bad input -------------------------------------------------------------------------------------------------

def test_malformed_json_names_the_file_and_the_place(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"results": {"piqa": {"acc": 0.5,}}}')
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON at line 1"):
        import_lm_eval(bad)
    # inside a folder, the bad file is named too
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"results": {"piqa": {"acc": 0.5}}}))
    with pytest.raises(ValueError, match=r"broken\.json"):
        import_lm_eval(tmp_path)


@pytest.mark.parametrize("doc,msg", [
    ([1, 2, 3], "top level is a list"),
    ({"config": {}}, "no 'results' mapping"),
    ({"results": {"piqa": 0.5}}, r"results\['piqa'\] should map metric names"),
])
def test_not_a_results_file(tmp_path, doc, msg):
    f = tmp_path / "x.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=msg):
        import_lm_eval(f)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        import_lm_eval(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="no .json files"):
        import_lm_eval(tmp_path)


def test_rerun_keeps_the_newest_file(tmp_path):
    for stamp, acc in (("2024-01-01T00-00-00", 0.40), ("2024-02-01T00-00-00", 0.45)):
        (tmp_path / f"results_{stamp}.json").write_text(json.dumps(
            {"results": {"piqa": {"acc,none": acc}}, "config": {"model_args": "pretrained=m,revision=step10"}}))
    df = import_lm_eval(tmp_path)
    assert len(df) == 1 and df["value"].iloc[0] == pytest.approx(0.45) and df["step"].iloc[0] == 10


# --- CSV -------------------------------------------------------------------------------------------------------

MAPPING = {"model": "Model", "n_params": "Params", "task": "Benchmark", "value": "Accuracy", "stderr": "Stderr"}


def test_import_csv_maps_columns():
    df = import_csv(FIX / "published_scores.csv", MAPPING, constants={"metric": "acc"})
    schema.validate(df)
    assert list(df["run_id"]) == ["tiny", "small", "medium", "large"]
    med = one(df, model="medium")
    assert med["n_params"] == 100_000_000 and med["value"] == pytest.approx(0.61) and med["stderr"] == 0.02
    large = one(df, model="large")
    assert math.isnan(large["value"]) and large["status"] == "not_measured"
    assert (df.loc[df["model"] != "large", "status"] == "imported").all()
    assert (df["metric"] == "acc").all() and (df["sweep"] == "published_scores").all()


def test_import_csv_errors(tmp_path):
    path = FIX / "published_scores.csv"
    with pytest.raises(ValueError, match="'Parameters'.*not in the file.*Params"):
        import_csv(path, {**MAPPING, "n_params": "Parameters"}, constants={"metric": "acc"})
    with pytest.raises(ValueError, match="'size' is not a results-table column"):
        import_csv(path, {**MAPPING, "size": "Params"}, constants={"metric": "acc"})
    with pytest.raises(ValueError, match="say where 'metric' comes from"):
        import_csv(path, MAPPING)
    bad = tmp_path / "bad.csv"
    bad.write_text("Model,Params,Benchmark,Accuracy,Stderr\na,10,t,high,0.1\n")
    with pytest.raises(ValueError, match="must be numeric, found 'high'"):
        import_csv(bad, MAPPING, constants={"metric": "acc"})
    with pytest.raises(ValueError, match="no such file"):
        import_csv(tmp_path / "none.csv", MAPPING)


# --- any JSON at all: a table or one clear ValueError, never another exception ---------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True),
                     st.sampled_from(["N/A", "none", "step12", "pretrained=x,revision=step3"]))
_keys = st.sampled_from(["results", "acc", "acc,none", "acc_stderr,none", "ppl", "alias", "config", "model_args",
                         "n-shot", "n-samples", "higher_is_better", "piqa", "num_fewshot", "effective", "x"])
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_json)
def test_random_json_gives_a_table_or_a_clear_error(doc):
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "r.json"
        f.write_text(json.dumps(doc))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = import_lm_eval(f)
        except ValueError as e:
            assert "r.json" in str(e)  # names the file
            return
        schema.validate(df)
        assert ((df["status"] == "imported") == df["value"].notna()).all()
