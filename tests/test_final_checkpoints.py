"""Backtests, scaling fits and the resolution view read each run at its last checkpoint by one rule
(`analysis.schema.final_checkpoints` / `final_measured`): the last step among all of a run's rows, so that a metric
left unmeasured there gives the run no point (an earlier checkpoint is a less-trained model, not a stand-in), and a
run that diverged or failed gives no point at all."""
import numpy as np
import pandas as pd

from analysis import schema
from analysis.backtest import final_by_size
from analysis.pipeline import backtests, scaling_fits
from analysis.resolution import resolution_points

SIZES = [int(round(v)) for v in np.logspace(5, 8, 8)]


def table(rows: list[dict]) -> pd.DataFrame:
    base = {"sweep": "s", "model": None, "n_params_nonembed": None, "n_layer": None, "d_model": None, "seed": 0,
            "tokens": 1e6, "flops": np.nan, "stderr": 0.01, "n": 100, "status": "ok"}
    return schema.validate(pd.DataFrame([{**base, **r} for r in rows])[list(schema.COLUMNS)])


def runs_table(*, unmeasured_last: str | None = None, diverged: str | None = None) -> pd.DataFrame:
    """Runs of each size with checkpoints at steps 10 and 100 for lm/loss and t/exact_match; `unmeasured_last`:
    the run whose exact match could not be measured at step 100; `diverged`: a run that diverged after step 10."""
    rows = []
    for n in SIZES:
        rid = f"r{n}"
        for step in (10, 100):
            common = {"run_id": rid, "n_params": n, "step": step, "flops": 6.0 * n * 1e6}
            if rid == diverged and step == 100:
                rows += [{**common, "task": t, "metric": m, "value": np.nan, "status": "diverged"}
                         for t, m in (("lm", "loss"), ("t", "exact_match"))]
                continue
            rows.append({**common, "task": "lm", "metric": "loss", "value": 2 + 30 * n ** -0.3 + (step == 10)})
            em = 1 / (1 + (3e6 / n) ** 2) * (0.5 if step == 10 else 1.0)
            if rid == unmeasured_last and step == 100:
                rows.append({**common, "task": "t", "metric": "exact_match", "value": np.nan,
                             "status": "not_measured"})
            else:
                rows.append({**common, "task": "t", "metric": "exact_match", "value": em})
    return table(rows)


def test_unmeasured_last_checkpoint_gives_no_point_rather_than_an_earlier_one():
    gap = f"r{SIZES[2]}"
    fin = final_by_size(runs_table(unmeasured_last=gap))
    em = fin[fin["metric"] == "exact_match"].set_index("n_params")
    assert SIZES[2] not in em.index and len(em) == len(SIZES) - 1  # not step 10's value instead
    assert (fin.loc[fin["metric"] == "loss", "n_params"].tolist() == [float(n) for n in SIZES])


def test_a_diverged_run_gives_no_point_even_from_before_it_diverged():
    bad = f"r{SIZES[-1]}"
    df = runs_table(diverged=bad)
    fin = final_by_size(df)
    assert float(SIZES[-1]) not in set(fin["n_params"])
    fits = scaling_fits(df, n_boot=0)
    assert set(fits["n"]) == {len(SIZES) - 1}  # the diverged size is not fitted from its step-10 loss


def test_pipeline_backtests_take_the_whole_table():
    """`backtests` chooses final checkpoints before it picks out curves: passing measured rows only would let a run
    fall back to an earlier checkpoint."""
    df = runs_table(unmeasured_last=f"r{SIZES[-1]}")
    bt = backtests(df)
    loss = bt[bt["metric"] == "loss"]
    assert list(loss["x_value"]) == [float(SIZES[-1])] and loss["n_fit"].iloc[0] == len(SIZES) - 1
    # exact match: the largest size has no final point, so the held-out size is the next one down
    em = bt[bt["metric"] == "exact_match"]
    assert list(em["x_value"]) == [float(SIZES[-2])] and em["n_fit"].iloc[0] == len(SIZES) - 2


def test_resolution_reads_each_run_at_its_last_checkpoint_over_all_tasks():
    rows = []
    for n in SIZES:
        for step in (10, 100):
            for task in ("a", "b"):
                if task == "b" and step == 100 and n == SIZES[0]:
                    continue  # task b was not probed at this run's last checkpoint
                lp = -0.5 if step == 100 else -3.0
                rows += [{"run_id": f"r{n}", "n_params": n, "step": step, "task": task, "example_id": i,
                          "answer_logprob": lp} for i in range(4)]
    pts = resolution_points(pd.DataFrame(rows))
    a, b = pts[pts["task"] == "a"], pts[pts["task"] == "b"]
    assert len(a) == len(SIZES) and np.allclose(a["log_p"], -0.5)
    assert SIZES[0] not in set(b["n_params"]) and np.allclose(b["log_p"], -0.5)  # no step-10 stand-in
