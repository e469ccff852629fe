"""`emergence analyze` at the command line: our tables and other people's (lm-eval JSON, a CSV with a mapping)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

FIX = Path(__file__).parent / "fixtures"


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


def test_analyze_csv_with_mapping(tmp_path):
    src = tmp_path / "scores.csv"
    shutil.copy(FIX / "published_scores.csv", src)
    p = run(str(src), "--from", "csv", "--map", "model=Model", "--map", "n_params=Params", "--map", "task=Benchmark",
            "--map", "value=Accuracy", "--set", "metric=acc")
    assert p.returncode == 0, p.stderr
    flags = pd.read_csv(tmp_path / "flags.csv")
    row = flags[(flags["task"] == "addition") & (flags["metric"] == "acc")].iloc[0]
    assert row["n_sizes"] == 3  # the row without a value is left out, not read as 0
    assert row["verdict"] == "inconclusive"  # fewer than 4 sizes: no claim


def test_analyze_bad_inputs_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in ([str(bad), "--from", "lm-eval"], [str(tmp_path / "missing")],
                 [str(FIX / "published_scores.csv"), "--from", "csv"],
                 [str(FIX / "published_scores.csv"), "--map", "task"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_jump_width_reaches_the_flags_and_a_bad_one_is_refused(tmp_path):
    src = tmp_path / "scores.csv"
    shutil.copy(FIX / "published_scores.csv", src)
    args = [str(src), "--from", "csv", "--map", "model=Model", "--map", "n_params=Params", "--map",
            "task=Benchmark", "--map", "value=Accuracy", "--set", "metric=acc"]
    p = run(*args, "--jump-width", "0.25")
    assert p.returncode == 0, p.stderr
    assert (pd.read_csv(tmp_path / "flags.csv")["w0"] == 0.25).all()
    bad = run(*args, "--jump-width", "-1")
    assert bad.returncode == 2 and "--jump-width" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
