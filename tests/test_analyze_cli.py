"""`emergence analyze` at the command line: our tables and other people's (lm-eval JSON, a CSV with a mapping), and
the folder an import writes, which `emergence report` reads as it reads a sweep's."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import PYTHIA_SUBSET_TASKS, SHARED, write_pythia_subset

from emergence.analyze import analyze
from emergence.cli import main
from emergence.config import ConfigError

FIX = Path(__file__).parent / "fixtures"
PYTHIA = SHARED / "data" / "pythia-evals" / "pythia-v1"
CSV_ARGS = ["--from", "csv", "--map", "model=Model", "--map", "n_params=Params", "--map", "task=Benchmark", "--map",
            "value=Accuracy", "--set", "metric=acc"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "emergence", "analyze", *args], capture_output=True, text=True)


def test_analyze_pythia_evals_folder(tmp_path):
    src = tmp_path / "pythia_evals"
    shutil.copytree(FIX / "pythia_evals", src)
    p = run(str(src), "--from", "lm-eval")
    assert p.returncode == 0, p.stderr
    flags = pd.read_csv(src / "flags.csv")
    assert len(flags) and set(flags["verdict"]) <= {"emergent", "smooth", "flat", "inconclusive"}
    assert "wrote" in p.stdout
    # judged along another axis, the flags along parameters are kept under their axis's name, and said so
    p = run(str(src), "--x", "flops", "--n-boot", "50")
    assert p.returncode == 0, p.stderr
    assert f"kept the flags judged along n_params as {src / 'flags.n_params.csv'}" in p.stderr
    assert pd.read_csv(src / "flags.n_params.csv").equals(flags)
    assert set(pd.read_csv(src / "flags.csv")["x"]) == {"flops"}


def test_analyze_csv_with_mapping(tmp_path):
    src = tmp_path / "scores.csv"
    shutil.copy(FIX / "published_scores.csv", src)
    p = run(str(src), "--from", "csv", "--map", "model=Model", "--map", "n_params=Params", "--map", "task=Benchmark",
            "--map", "value=Accuracy", "--set", "metric=acc")
    assert p.returncode == 0, p.stderr
    flags = pd.read_csv(tmp_path / "scores" / "flags.csv")  # an imported file gets a folder of its own
    row = flags[(flags["task"] == "addition") & (flags["metric"] == "acc")].iloc[0]
    assert row["n_sizes"] == 3  # the row without a value is left out, not read as 0
    assert row["verdict"] == "inconclusive"  # fewer than 4 sizes: no claim
    # the printed table says why, and leaves out columns no row has a value in
    assert "not enough data: 3 n_params value(s), 4 needed" in p.stdout
    assert "reason" in p.stdout.splitlines()[0] and "mirage" not in p.stdout.splitlines()[0]


def test_analyze_bad_inputs_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in ([str(bad), "--from", "lm-eval"], [str(tmp_path / "missing")],
                 [str(FIX / "published_scores.csv"), "--from", "csv"],
                 [str(FIX / "published_scores.csv"), "--map", "task"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_w0_reaches_the_flags_is_kept_with_its_source_and_a_bad_one_is_refused(tmp_path):
    src = tmp_path / "scores.csv"
    shutil.copy(FIX / "published_scores.csv", src)
    args = [str(src), "--from", "csv", "--map", "model=Model", "--map", "n_params=Params", "--map",
            "task=Benchmark", "--map", "value=Accuracy", "--set", "metric=acc"]
    p = run(*args, "--w0", "0.25", "--n-boot", "100")
    assert p.returncode == 0, p.stderr
    assert (pd.read_csv(tmp_path / "scores" / "flags.csv")["w0"] == 0.25).all()
    kept = json.loads((tmp_path / "scores" / "flag_options.json").read_text())
    assert kept["options"] == {"w0": 0.25, "loss_w0": 0.1, "alpha": 0.05, "n_boot": 100}
    assert kept["sources"] == {"w0": "command line", "loss_w0": "default", "alpha": "default",
                               "n_boot": "command line"}
    assert "--w0 0.25 --n-boot 100" in json.loads((tmp_path / "scores" / "meta.json").read_text())["command"]
    # analysed again without flags: the folder's settings hold, they are not silently reset to the defaults
    p = run(*args)
    assert p.returncode == 0, p.stderr
    assert (pd.read_csv(tmp_path / "scores" / "flags.csv")["w0"] == 0.25).all()
    for flag, value, said in (("--w0", "-1", "--w0 must be a positive"), ("--alpha", "1.5", "--alpha must be"),
                              ("--n-boot", "5", "--n-boot must be"), ("--loss-w0", "0", "--loss-w0 must be")):
        bad = run(*args, flag, value)
        assert bad.returncode == 2 and said in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    (tmp_path / "scores" / "flag_options.json").write_text("{not json")
    bad = run(*args)
    assert bad.returncode == 2 and "flag_options.json is not a readable settings file" in bad.stderr


# --- an import is a folder the report reads ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not PYTHIA.exists(), reason="../shared/data/pythia-evals is not beside the checkout")
def test_imported_pythia_evals_get_the_whole_report(tmp_path):
    """EleutherAI's published zero-shot evals of the Pythia suite, all 7 sizes at 3 checkpoints on 4 tasks (a subset
    of the files and tasks, to stay fast): the import writes results.parquet and meta.json beside the flags, and the
    report then draws capability against size, the heatmap and the views along training from them."""
    src = tmp_path / "pythia-v1"
    tasks = PYTHIA_SUBSET_TASKS
    write_pythia_subset(src)
    p = run(str(src), "--from", "lm-eval", "--view", "transitions")
    assert p.returncode == 0, p.stderr
    assert f"report: emergence report {src}" in p.stdout
    res = pd.read_parquet(src / "results.parquet")
    assert res["model"].nunique() == 7 and set(res["step"]) == {1000, 13000, 143000} and set(res["task"]) == tasks
    assert len(res) == 7 * 3 * 8  # acc and acc_norm of arc_easy, piqa, sciq; acc and perplexity of lambada_openai
    lam = res[(res["model"] == "pythia-70m") & (res["step"] == 143000) & (res["task"] == "lambada_openai")
              & (res["metric"] == "acc")]
    assert lam["value"].tolist() == [pytest.approx(0.18455268775470599)]
    meta = json.loads((src / "meta.json").read_text())
    assert meta["importer"] == "lm-eval" and meta["source"] == str(src.resolve()) and meta["rows"] == len(res)
    assert meta["command"] == f"emergence analyze {src} --from lm-eval --view transitions" and meta["imported"]
    p = subprocess.run([sys.executable, "-m", "emergence", "report", str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for name in ("capability", "heatmap", "training"):
        png = src / "plots" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 10_000, name
    html = (src / "report.html").read_text()
    assert "results.parquet not found" not in html and "meta.json not found" not in html
    assert html.count("data:image/png;base64,") >= 3
    assert "emergence analyze" in html  # the import's command, in "What was run"


def test_an_imported_file_gets_a_folder_of_its_own_and_the_input_is_untouched(tmp_path):
    src = tmp_path / "scores.csv"
    shutil.copy(FIX / "published_scores.csv", src)
    before = src.read_bytes()
    assert main(["analyze", str(src), *CSV_ARGS]) == 0
    out = tmp_path / "scores"
    assert src.read_bytes() == before
    res = pd.read_parquet(out / "results.parquet")
    assert list(res["model"]) == ["tiny", "small", "medium", "large"] and res["value"].isna().sum() == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["importer"] == "csv" and meta["source"] == str(src.resolve())
    assert meta["mapping"]["value"] == "Accuracy" and meta["constants"] == {"metric": "acc"}
    assert len(meta["sha256"]) == 64 and meta["command"].startswith(f"emergence analyze {src} --from csv --map ")
    assert {"fits.csv", "flags.csv"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / "flags.csv").exists() and not (tmp_path / "results.parquet").exists()
    assert main(["analyze", str(src), *CSV_ARGS]) == 0  # the same import again replaces its own folder


def test_an_import_never_overwrites_what_it_did_not_write(tmp_path):
    csv = tmp_path / "scores.csv"
    shutil.copy(FIX / "published_scores.csv", csv)
    args = dict(source="csv", mapping={"model": "Model", "n_params": "Params", "task": "Benchmark",
                                       "value": "Accuracy"}, constants={"metric": "acc"})
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "results.parquet").write_bytes(b"a sweep's table")
    with pytest.raises(ConfigError, match="already holds results.parquet, not written by an import.*--out"):
        analyze(csv, out=sweep, **args)
    assert (sweep / "results.parquet").read_bytes() == b"a sweep's table"
    table = tmp_path / "t" / "results.parquet"  # an input that has the name of the import's table
    table.parent.mkdir()
    pd.read_csv(csv).to_parquet(table)
    with pytest.raises(ConfigError, match="would be overwritten"):
        analyze(table, out=table.parent, **args)
    (tmp_path / "scores").write_text("a file where the folder would go")
    with pytest.raises(ConfigError, match="is a file"):
        analyze(csv, **args)
    written = analyze(csv, out=tmp_path / "elsewhere", **args)
    assert written["results"] == tmp_path / "elsewhere" / "results.parquet" and written["flags"].exists()
    other = tmp_path / "other.csv"
    shutil.copy(csv, other)
    with pytest.raises(ConfigError, match=f"holds the import of {csv.resolve()}"):
        analyze(other, out=tmp_path / "elsewhere", **args)
    with pytest.raises(ConfigError, match="--out is where an import"):
        analyze(tmp_path / "elsewhere", out=tmp_path / "x")


def test_a_folder_imports_again_over_its_own_record(tmp_path):
    src = tmp_path / "evals"
    shutil.copytree(FIX / "pythia_evals", src)
    first = analyze(src, source="lm-eval")
    rows = pd.read_parquet(first["results"])
    again = analyze(src, source="lm-eval")  # meta.json of the first import is not read as a results file
    pd.testing.assert_frame_equal(pd.read_parquet(again["results"]), rows)
    assert json.loads((src / "meta.json").read_text())["importer"] == "lm-eval"


def test_wide_table_in_one_command(tmp_path, capsys):
    """A W&B export of one run (one row per step, one column per task and metric), analysed along training."""
    src = tmp_path / "olmo.csv"
    steps = [1000, 2000, 4000, 8000, 16000, 32000]
    lines = ["_step,train/loss,eval/arc_easy/acc,eval/piqa/bits_per_byte"]
    lines += [f"{s},{4 - i * 0.1:.2f},{0.25 + 0.05 * i:.2f},{1.3 - 0.05 * i:.2f}" for i, s in enumerate(steps)]
    src.write_text("\n".join(lines) + "\n")
    assert main(["analyze", str(src), "--from", "csv", "--x", "tokens", "--map", "value=eval/{task}/{metric}",
                 "--map", "step=_step", "--set", "model=olmo-1b", "--set", "n_params=1176764416",
                 "--set", "tokens_per_step=4194304"]) == 0
    res = pd.read_parquet(tmp_path / "olmo" / "results.parquet")
    assert sorted(set(zip(res["task"], res["metric"]))) == [("arc_easy", "acc"), ("piqa", "bits_per_byte")]
    assert sorted(res["step"].unique()) == steps and (res["tokens"] == res["step"] * 4194304.0).all()
    flags = pd.read_csv(tmp_path / "olmo" / "flags.csv")
    assert set(zip(flags["task"], flags["metric"])) == {("arc_easy", "acc"), ("piqa", "bits_per_byte")}
    capsys.readouterr()
    assert main(["analyze", str(src), "--from", "csv", "--map", "value=evals/{task}/{metric}",
                 "--map", "step=_step", "--set", "n_params=1"]) == 2
    err = capsys.readouterr().err
    assert "no column matches value='evals/{task}/{metric}'" in err and len(err.strip().splitlines()) == 1


def test_answer_lengths_only_for_tasks_probed_in_their_own_vocabulary():
    """The L of exact match ~ token_accuracy^L is the character vocabulary's answer length (digits and the end
    token) where a task was probed in it; a task probed through a tokenizer (char_accuracy rows) gets none, so L
    is fitted rather than taken from the wrong vocabulary."""
    from emergence.analyze import answer_lengths

    rows = pd.DataFrame({"task": ["add2", "add2", "add3", "add3", "sort"],
                         "metric": ["exact_match", "token_accuracy", "exact_match", "char_accuracy", "exact_match"]})
    got = answer_lengths(rows)
    assert got["add2"] == 4.0  # 3 digits of the sum and the end token
    assert "add3" not in got and "sort" in got and got["sort"] > 1


def test_the_loss_views_w0_is_a_setting_in_nats(tmp_path):
    """analysis.loss_w0 reaches the loss view (its W0 is in nats of held-out loss, not the decades of x)
    and not the size view; a non-positive one is refused."""
    import numpy as np

    from analysis.pipeline import run_analysis
    from emergence.config import compose, config_settings, validate

    settings = config_settings(compose(["analysis.loss_w0=0.05"]).analysis)
    opts = settings.options.kwargs()
    assert opts["loss_w0"] == 0.05 and opts["w0"] == 0.5 and settings.sources["loss_w0"] == "sweep config"
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate([1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6]):
        for step in (100, 200, 400):
            loss = 4.0 / (1 + i * 0.3) * (1 + 100 / step)
            base = dict(sweep="s", run_id=f"r{i}", model=f"m{i}", n_params=int(n), n_params_nonembed=int(n),
                        n_layer=1, d_model=8, seed=0, step=step, tokens=step * 1e3, flops=6e3 * step * n, n=256,
                        status="ok")
            rows.append({**base, "task": "lm", "metric": "loss", "value": loss, "stderr": 0.01})
            acc = float(np.clip(1.2 - loss / 3, 0, 1))
            rows.append({**base, "task": "t", "metric": "exact_match", "value": rng.binomial(256, acc) / 256,
                         "stderr": 0.02})
    written = run_analysis(pd.DataFrame(rows), tmp_path, views=["loss"], n_boot=0,
                           flag_options={**opts, "n_boot": 50})
    assert (pd.read_csv(written["loss"])["w0"] == 0.05).all()
    assert (pd.read_csv(written["flags"])["w0"] == 0.5).all()
    with pytest.raises(ConfigError, match="analysis.loss_w0 must be a positive"):
        validate(compose(["analysis.loss_w0=0"]))


@pytest.mark.parametrize("damage", ["truncated results", "no results", "garbage runs"])
def test_report_on_broken_input_fails_in_one_line_and_writes_nothing(tmp_path, capsys, damage):
    folder = tmp_path / "sweep"
    example = Path(__file__).resolve().parents[1] / "results" / "example"
    folder.mkdir()
    for name in ("results.parquet", "runs.parquet", "flags.csv", "fits.csv", "meta.json"):
        shutil.copy(example / name, folder / name)
    name = "runs.parquet" if "runs" in damage else "results.parquet"
    if damage == "no results":
        (folder / name).unlink()
    else:
        (folder / name).write_bytes((folder / name).read_bytes()[:2000] if "truncated" in damage else b"garbage")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{folder / name} " in err and "rerun" in err, err
    assert not (folder / "report.html").exists() and not (folder / "plots").exists()


def test_repeated_rows_are_refused_and_dedupe_keeps_one_of_each(tmp_path, capsys):
    """Every row three times would count each run three times (6 runs per size read as 18): refused in one line,
    and `--dedupe last` gives what the table without the repeats gives; an import takes the same choice."""
    from test_reliability import write_table

    for d in ("once", "thrice"):
        (tmp_path / d).mkdir()
    write_table(tmp_path / "once", "r.csv")
    write_table(tmp_path / "thrice", "r.csv", times=3)
    assert main(["analyze", str(tmp_path / "once" / "r.csv")]) == 0
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "thrice" / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--dedupe last" in err, err
    assert not (tmp_path / "thrice" / "flags.csv").exists()
    assert main(["analyze", str(tmp_path / "thrice" / "r.csv"), "--dedupe", "last"]) == 0
    once, thrice = (pd.read_csv(tmp_path / d / "flags.csv") for d in ("once", "thrice"))
    assert (thrice["n_runs"] == once["n_runs"]).all() and set(once["n_runs"]) == {8}
    pd.testing.assert_frame_equal(thrice[["task", "metric", "verdict", "width"]], once[["task", "metric", "verdict",
                                                                                     "width"]])
    src = tmp_path / "thrice" / "r.csv"
    mapped = ["--from", "csv", "--out", str(tmp_path / "imported")]
    assert main(["analyze", str(src), *mapped]) == 2
    assert "give --dedupe last (or first)" in capsys.readouterr().err
    assert main(["analyze", str(src), *mapped, "--dedupe", "first"]) == 0
    assert len(pd.read_parquet(tmp_path / "imported" / "results.parquet")) == 16
    meta = json.loads((tmp_path / "imported" / "meta.json").read_text())
    assert meta["command"].endswith("--dedupe first")


def test_dedupe_keys_a_measurement_by_tokens_too_and_counts_disagreement_on_the_schemas_columns():
    """Checkpoints placed by tokens alone (no step) are distinct measurements; a column the schema does not know (a
    logging timestamp) does not make two repeats of one measurement disagree."""
    from analysis import schema
    from test_reliability import write_table

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        write_table(Path(d), "r.parquet")
        df = pd.read_parquet(Path(d) / "r.parquet")
    by_tokens = pd.concat([df.assign(step=pd.NA, tokens=t) for t in (1e4, 2e4)], ignore_index=True)
    assert schema.dedupe(by_tokens) is by_tokens  # nothing shared: returned as it is
    twice = pd.concat([df.assign(logged_at=0), df.assign(logged_at=1)], ignore_index=True)
    with pytest.raises(ValueError, match=r"32 rows share .* \(all repeat another row exactly;"):
        schema.dedupe(twice)
    one_off = twice.copy()
    one_off.loc[len(df), "value"] = 0.99
    with pytest.raises(ValueError, match=r"30 repeat another row exactly, 2 disagree with it"):
        schema.dedupe(one_off)
    assert len(schema.dedupe(twice, "last")) == len(df)
