"""Importers: lm-evaluation-harness JSON (both layouts, and Pythia's published folder) and mapped CSV tables."""
from __future__ import annotations

import json
import math
import shutil
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
    with pytest.raises(ValueError, match=r"the file has no 'metric' column; map one onto it \(--map metric=COLUMN"):
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


# --- wide tables (one row per step, one column per task and metric: W&B exports) ---------------------------------

WIDE = ("_step,train/loss,eval/arc_easy/acc,eval/arc_easy/acc_stderr,eval/hellaswag/acc_norm,eval/piqa/bpb,"
        "eval/pile/CrossEntropyLoss\n"
        "0,10.9,,,,,\n"
        "1000,4.2,0.30,0.01,0.27,1.20,3.1\n"
        "1500,4.0,,,,,\n"
        "2000,3.8,0.35,0.02,0.31,1.10,3.0\n"
        "2000,3.8,0.41,0.02,0.33,1.05,2.9\n")  # step 2000 logged again after a resume: the last row wins
WIDE_MAP = {"value": "eval/{task}/{metric}", "stderr": "eval/{task}/{metric}_stderr", "step": "_step"}


@pytest.fixture
def wide_csv(tmp_path):
    p = tmp_path / "olmo_1b.csv"
    p.write_text(WIDE)
    return p


def test_wide_table_becomes_one_row_per_task_metric_and_step(wide_csv):
    with pytest.warns(UserWarning, match="CrossEntropyLoss"):
        df = import_csv(wide_csv, WIDE_MAP, constants={"model": "olmo-1b", "n_params": "1176764416",
                                                       "tokens_per_step": 4_194_304})
    schema.validate(df)
    got = {(r.task, r.metric, int(r.step)): r.value for r in df.itertuples()}
    assert got == pytest.approx({
        ("arc_easy", "acc", 1000): 0.30, ("hellaswag", "acc_norm", 1000): 0.27,
        ("piqa", "bits_per_byte", 1000): 1.20,
        ("arc_easy", "acc", 2000): 0.41, ("hellaswag", "acc_norm", 2000): 0.33,
        ("piqa", "bits_per_byte", 2000): 1.05})
    # the stderr column is read as the companion of its value, not as a metric
    assert df.attrs["skipped_metrics"] == ["CrossEntropyLoss"]
    arc = one(df, task="arc_easy", step=1000)
    assert arc["stderr"] == pytest.approx(0.01) and math.isnan(one(df, task="piqa", step=1000)["stderr"])
    assert arc["tokens"] == 1000 * 4_194_304 and arc["flops"] == pytest.approx(6 * 1176764416 * 1000 * 4_194_304)
    assert (df["run_id"] == "olmo-1b").all() and (df["n_params"] == 1176764416).all()
    assert (df["sweep"] == "olmo_1b").all() and (df["status"] == "imported").all()
    assert 0 not in set(df["step"]) and 1500 not in set(df["step"])  # empty cells: not logged there, no rows


def test_wide_table_placeholder_with_a_regex_and_a_tokens_column(tmp_path):
    p = tmp_path / "ladder.csv"
    p.write_text("step,tokens,size,arc_easy_acc,arc_easy_acc_norm,piqa_acc\n"
                 "10,1e6,s,0.25,0.26,0.5\n10,1e6,m,0.3,0.31,0.55\n")
    df = import_csv(p, {"value": "{task}_{metric:acc|acc_norm}", "step": "step", "tokens": "tokens", "model": "size"})
    assert set(zip(df["model"], df["task"], df["metric"])) == {
        (m, t, k) for m in "sm" for t, k in (("arc_easy", "acc"), ("arc_easy", "acc_norm"), ("piqa", "acc"))}
    assert one(df, model="m", task="arc_easy", metric="acc_norm")["value"] == pytest.approx(0.31)
    assert (df["tokens"] == 1e6).all() and df["flops"].isna().all()  # no n_params: no FLOPs


@pytest.mark.parametrize("mapping,constants,msg", [
    ({"value": "evals/{task}/{metric}", "step": "_step"}, {}, r"no column matches value='evals/\{task\}/\{metric\}' "
                                                               r"\(the file's columns: _step, train/loss"),
    ({"value": "eval/{task}/{metric:loss}"}, {}, "no column matches"),
    ({"value": "eval/{task}/{size}"}, {"metric": "acc"}, r"\{size\} is not a results column"),
    ({"value": "eval/{task}/{task}"}, {"metric": "acc"}, "appears twice"),
    ({"value": "eval/{task}/{metric:(}"}, {}, "not a valid column pattern"),
    ({"value": "eval/{task}/{metric}"}, {"metric": "acc"}, "'metric' comes both from"),
    ({"value": "eval/{task}/{metric}", "stderr": "se/{model}"}, {}, r"uses \{model\}"),
    ({"value": "eval/arc_easy/acc", "stderr": "eval/{task}/se"}, {"task": "a", "metric": "acc"},
     "stderr=.* is a column pattern, but value is not"),
    ({"value": "eval/{task}/{metric}"}, {"tokens_per_step": 4096}, "tokens_per_step needs each row's step"),
    ({"value": "eval/{task}/{metric}", "step": "_step"}, {"tokens_per_step": "many"}, "must be a positive number"),
    ({"value": "eval/{task}/{metric}", "step": "_step", "tokens": "_step"}, {"tokens_per_step": 8}, "give one"),
    ({"value": "eval/pile/{metric}"}, {"task": "pile"}, "no metric of known direction"),
])
def test_wide_table_errors_are_one_line(wide_csv, mapping, constants, msg):
    with pytest.raises(ValueError, match=msg) as e:
        import_csv(wide_csv, mapping, constants=constants)
    assert "\n" not in str(e.value) and str(wide_csv) in str(e.value)


def test_wide_table_keeps_every_model_reading_columns_named_as_the_schema_names_them(tmp_path):
    """One row per model, one column per task and metric, and no step: every cell is a measurement. Columns already
    called `model` and `n_params` are read as those columns, so no model overwrites another."""
    p = tmp_path / "wide.csv"
    p.write_text("model,n_params,arc_easy/acc,lambada/acc\n" + "".join(
        f"m{i},{10 ** (6 + i / 2):.0f},{0.25 + i / 20},{0.1 + i / 10}\n" for i in range(6)))
    df = import_csv(p, {"value": "{task}/{metric}"})
    assert len(df) == 12 and sorted(set(df["model"])) == [f"m{i}" for i in range(6)]
    assert df["n_params"].notna().all() and one(df, model="m5", task="lambada")["value"] == pytest.approx(0.6)
    long = tmp_path / "long.csv"  # a long table whose columns carry the schema's names needs no mapping at all
    long.write_text("model,n_params,task,metric,value\na,10,t,acc,0.1\nb,100,t,acc,0.5\n")
    assert list(import_csv(long, {})["value"]) == [0.1, 0.5]


def test_rows_that_would_overwrite_each_other_are_refused_not_dropped(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("size,arc/acc\n1,0.2\n2,0.3\n")  # nothing tells the two models apart
    with pytest.raises(ValueError, match=r"2 rows share a run, step, task and metric .*--map model=COLUMN"):
        import_csv(p, {"value": "{task}/{metric}"})
    assert list(import_csv(p, {"value": "{task}/{metric}", "n_params": "size"})["value"]) == [0.2, 0.3]


def test_wide_table_two_columns_for_one_measurement_are_refused(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("_step,eval/piqa/bits_per_byte,eval/piqa/bpb\n1,0.9,0.95\n")
    with pytest.raises(ValueError, match=r"columns 'eval/piqa/bits_per_byte' and 'eval/piqa/bpb' both give task "
                                         r"'piqa', metric 'bits_per_byte'"):
        import_csv(p, {"value": "eval/{task}/{metric}", "step": "_step"}, constants={"n_params": 10})
    df = import_csv(p, {"value": "eval/{task}/{metric:bpb}", "step": "_step"}, constants={"n_params": 10})
    assert list(df["metric"]) == ["bits_per_byte"] and list(df["value"]) == [0.95]  # "bpb" is bits per byte


def test_wide_table_non_numeric_cell_names_the_column(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("_step,eval/arc/acc\n1,0.5\n2,oops\n")
    with pytest.raises(ValueError, match=r"column 'eval/arc/acc' must be numeric, found 'oops'"):
        import_csv(p, {"value": "eval/{task}/{metric}", "step": "_step"}, constants={"n_params": 10})


def test_long_table_tokens_per_step_and_flops(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("Model,Params,Step,Benchmark,Acc\na,1000,10,t,0.5\nb,2000,20,t,0.6\n")
    df = import_csv(p, {"model": "Model", "n_params": "Params", "step": "Step", "task": "Benchmark", "value": "Acc"},
                    constants={"metric": "ppl", "tokens_per_step": 100})
    assert list(df["tokens"]) == [1000.0, 2000.0] and list(df["flops"]) == [6.0 * 1000 * 1000, 6.0 * 2000 * 2000]
    assert (df["metric"] == "perplexity").all()  # the one name map, for every importer
    with pytest.raises(ValueError, match="is a folder"):
        import_csv(tmp_path, {"value": "Acc"})


# --- metrics other tools report ----------------------------------------------------------------------------------

def test_bits_per_byte_and_acc_norm_are_registered_with_direction_and_bounds():
    bpb, norm = schema.METRICS["bits_per_byte"], schema.METRICS["acc_norm"]
    assert bpb.higher_is_better is False and (bpb.lower_bound, bpb.upper_bound) == (0.0, None)
    assert norm.higher_is_better is True and (norm.lower_bound, norm.upper_bound) == (0.0, 1.0)


def test_lm_eval_names_map_onto_the_registered_metrics(tmp_path):
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"results": {
        "wikitext": {"bits_per_byte,none": 0.95, "byte_perplexity,none": 1.93, "alias": "wikitext"},
        "hellaswag": {"acc_norm,none": 0.41, "acc_norm_stderr,none": 0.005},
        "pile": {"bpb": 0.88}}}))
    df = import_lm_eval(f)
    assert one(df, task="wikitext", metric="bits_per_byte")["value"] == pytest.approx(0.95)
    assert one(df, task="pile", metric="bits_per_byte")["value"] == pytest.approx(0.88)
    assert one(df, task="hellaswag", metric="acc_norm")["stderr"] == pytest.approx(0.005)
    assert schema.METRICS["bits_per_byte"].lower_bound == 0.0  # the registry's entry, not one made up on import


def test_folder_import_passes_over_its_own_record_but_not_other_json(tmp_path):
    shutil.copytree(FIX / "pythia_evals", tmp_path / "evals")
    before = import_lm_eval(tmp_path / "evals")
    (tmp_path / "evals" / "meta.json").write_text(json.dumps({"importer": "lm-eval", "source": "x"}))
    pd.testing.assert_frame_equal(import_lm_eval(tmp_path / "evals"), before)
    (tmp_path / "evals" / "meta.json").write_text(json.dumps({"command": "emergence sweep"}))
    with pytest.raises(ValueError, match=r"meta\.json: not an lm-evaluation-harness results file"):
        import_lm_eval(tmp_path / "evals")


@pytest.mark.parametrize("column, value, message", [
    ("n_params", "0", "'n_params' must be positive, found 0"),
    ("n_params", "-1e6", "'n_params' must be positive, found -1e\\+06"),
    ("stderr", "-0.02", "'stderr' must be zero or more, found -0.02"),
])
def test_signs_that_would_move_a_verdict_silently_are_refused(tmp_path, column, value, message):
    """A size of zero or below was dropped without a word, and a negative stderr widened W's interval (0.71 to
    2.08): both are refused, naming the column."""
    p = tmp_path / "t.csv"
    rows = {"model": ["a", "b"], "n_params": ["1e6", "1e7"], "task": ["t", "t"], "metric": ["acc", "acc"],
            "value": ["0.3", "0.5"], "stderr": ["0.01", "0.01"]}
    rows[column][1] = value
    pd.DataFrame(rows).to_csv(p, index=False)
    with pytest.raises(ValueError, match=message):
        import_csv(p, {})


def test_json_nested_past_the_parser_is_one_clear_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply to read"):
        import_lm_eval(deep)


def test_cells_a_spreadsheet_would_run_are_written_as_text_and_read_back_exactly(tmp_path):
    """OWASP's CSV injection: a task named like a formula reaches flags.csv with a leading apostrophe (a spreadsheet
    shows it as text), and this package reads its own CSVs back to the name as given."""
    from analysis.pipeline import read_csv, write_csv

    names = ["=HYPERLINK(\"http://x\",\"y\")", "+1", "-2", "@SUM(A1)", "'quoted", "plain", "a-b"]
    df = pd.DataFrame({"task": names, "value": [1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0]})
    path = write_csv(df, tmp_path / "flags.csv")
    raw = path.read_text().splitlines()[1:]
    assert [r.rsplit(",", 1)[0].strip('"') for r in raw][:5] == ["'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")", "'+1",
                                                                  "'-2", "'@SUM(A1)", "''quoted"]
    assert raw[1].endswith(",-2.0") and raw[5] == "plain,6.0" and raw[6] == "a-b,7.0"  # numbers stay numbers
    pd.testing.assert_frame_equal(read_csv(path), df)
    twice = pd.DataFrame([["=a", 1, "-b"]], columns=["x", "n", "x"])  # a view that repeats a column name
    assert write_csv(twice, tmp_path / "twice.csv").read_text().splitlines()[1] == "'=a,1,'-b"
