"""`emergence compare`: paired tests of two checkpoints on the same examples, checked against counts worked by hand."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.compare import compare_checkpoints
from emergence.cli import main


def instances(run: str, step: int, exact, logprob, task: str = "add2") -> pd.DataFrame:
    n = len(exact)
    return pd.DataFrame({"task": task, "example_id": np.arange(n), "exact": np.asarray(exact, bool),
                         "answer_logprob": np.asarray(logprob, float), "run_id": run, "step": step})


def pair(a_exact, b_exact, a_lp, b_lp, task="add2"):
    return pd.concat([instances("r", 100, a_exact, a_lp, task), instances("r", 200, b_exact, b_lp, task)])


def test_mcnemar_counts_only_the_discordant_pairs_and_the_interval_holds_the_difference():
    a = np.r_[np.ones(40), np.zeros(60)]
    b = np.r_[np.ones(50), np.zeros(50)]  # B right on A's 40 and 10 more: 0 against 10 discordant
    lp = np.linspace(-3, -1, 100)
    out = compare_checkpoints(pair(a, b, lp, lp + 0.5), ("r", 100), ("r", 200), n_perm=2000)
    em = out[out["metric"] == "exact_match"].iloc[0]
    assert (em["a_only"], em["b_only"], em["n"]) == (0, 10, 100)
    assert em["p_value"] == pytest.approx(stats.binomtest(10, 10, 0.5).pvalue) == pytest.approx(2 / 1024)
    assert em["diff"] == pytest.approx(0.1) and em["lo"] <= 0.1 <= em["hi"] and em["lo"] > 0
    lp_row = out[out["metric"] == "answer_logprob"].iloc[0]
    assert lp_row["diff"] == pytest.approx(0.5) and lp_row["p_value"] == pytest.approx(1 / 2001)  # every flip smaller
    # two independent 95% intervals of 0.4 and 0.5 on 100 examples overlap; the paired test still finds it
    lo_b = stats.binomtest(50, 100).proportion_ci().low
    assert lo_b < 0.4


def test_the_same_checkpoint_twice_differs_by_nothing():
    rng = np.random.default_rng(0)
    e, lp = rng.random(64) < 0.5, rng.normal(-2, 1, 64)
    out = compare_checkpoints(pair(e, e, lp, lp), ("r", 100), ("r", 200))
    assert (out["diff"] == 0).all() and (out["p_value"] == 1).all() and (out["lo"] == 0).all()
    assert (out["hi"] == 0).all()


def test_q_values_are_benjamini_hochberg_across_tasks_within_a_metric_and_last_step_is_the_default():
    rng = np.random.default_rng(1)
    parts = []
    for task, gain in (("t1", 30), ("t2", 0), ("t3", 6)):
        a = np.zeros(200, bool)
        b = np.zeros(200, bool)
        b[:gain] = True
        lp = rng.normal(-2, 1, 200)
        parts.append(pair(a, b, lp, lp + rng.normal(0, 1, 200), task))
    df = pd.concat(parts, ignore_index=True)
    out = compare_checkpoints(df, ("r", 100), ("r", None))  # None: the run's last checkpoint, step 200
    em = out[out["metric"] == "exact_match"].set_index("task")
    p = em["p_value"].to_numpy()
    m = len(p)
    order = np.argsort(p)
    expected = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    assert np.allclose(np.sort(em["q_value"].to_numpy()), np.minimum(expected, 1))
    assert em.loc["t2", "p_value"] == 1 and em.loc["t1", "q_value"] < 1e-6
    only = compare_checkpoints(df, ("r", 100), ("r", 200), task="t3")
    assert set(only["task"]) == {"t3"}


@pytest.mark.parametrize("a,b,task,message", [
    (("x", 100), ("r", 200), None, "no per-example rows for run 'x'; runs with rows: r"),
    (("r", 150), ("r", 200), None, "has no per-example rows at step 150; its steps: 100, 200"),
    (("r", 100), ("r", 200), "sort", "no per-example rows for task 'sort'"),
])
def test_a_missing_run_step_or_task_is_one_clear_error(a, b, task, message):
    e = np.ones(8, bool)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        compare_checkpoints(pair(e, e, np.zeros(8), np.zeros(8)), a, b, task=task)


def test_the_command_prints_the_paired_table_and_refuses_a_bad_reference(tmp_path, capsys):
    a = np.r_[np.ones(40), np.zeros(60)]
    b = np.r_[np.ones(50), np.zeros(50)]
    pair(a, b, np.zeros(100), np.zeros(100)).to_parquet(tmp_path / "instances.parquet")
    assert main(["compare", str(tmp_path), "--a", "r@100", "--b", "r"]) == 0
    out = capsys.readouterr().out
    assert "McNemar exact" in out and "the difference B - A on the same examples" in out
    assert main(["compare", str(tmp_path), "--a", "r@last", "--b", "r"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "write RUN_ID@STEP" in err[0]
    assert main(["compare", str(tmp_path / "nothing"), "--a", "r", "--b", "r"]) == 2
    assert "no per-example results" in capsys.readouterr().err


def test_consecutive_checkpoints_are_tested_pairwise_and_the_report_counts_the_rises():
    """Each run's consecutive checkpoints, paired on their examples: a rise of 30 of 100 examples is found, a step
    where nothing changed is not; the report's training section counts them per task."""
    from types import SimpleNamespace

    from analysis.compare import consecutive_changes
    from analysis.report.document import Para, Table
    from analysis.report.view_sections import _consecutive_blocks

    e0 = np.zeros(100, bool)
    e1 = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    lp = np.zeros(100)
    df = pd.concat([instances("r", 100, e0, lp), instances("r", 200, e1, lp), instances("r", 300, e1, lp),
                    instances("s", 100, e0, lp), instances("s", 200, e0, lp)], ignore_index=True)
    ch = consecutive_changes(df).set_index(["run_id", "step_a"])
    assert len(ch) == 3
    assert ch.loc[("r", 100), "b_only"] == 30 and ch.loc[("r", 100), "p_value"] == pytest.approx(2 * 0.5 ** 30)
    assert ch.loc[("r", 200), "p_value"] == 1 and ch.loc[("s", 100), "p_value"] == 1
    blocks = _consecutive_blocks(SimpleNamespace(instances=df))
    assert "of 3 pairs of a run's consecutive checkpoints (each task), 1 raised exact match and 0 lowered" in str(
        blocks[0])
    table = [b for b in blocks if isinstance(b, Table)][0]
    assert table.rows == [["add2", "3", "1", "0", "1 of 2", "100 \u2192 200 (1 run)"]]
    assert _consecutive_blocks(SimpleNamespace(instances=None)) == [] and isinstance(blocks[0], Para)
