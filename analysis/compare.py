"""Is checkpoint B better than checkpoint A on the same examples? A paired comparison per task from the per-example
results (`instances.parquet`: task, example_id, exact, answer_logprob, run_id, step), never two independent
intervals: the same examples scored twice are correlated, and pairing removes the examples' own difficulty.

- `exact_match`: the difference of accuracy B - A; McNemar's exact test (a two-sided binomial test of the
  discordant pairs, B right and A wrong against A right and B wrong, at 1/2; McNemar 1947), exact at any count.
- `answer_logprob` (the answer's log-probability, a continuous score): the mean paired difference; its p-value is
  a sign-flip permutation test of the paired differences (exact under the null that each difference is as likely
  to have either sign; `n_perm` random flips, the observed one counted).
- Both intervals are the paired bootstrap's (examples resampled with their two scores together, percentile 95%).
- q: Benjamini-Hochberg across the tasks compared, within each metric.

This module imports numpy, scipy and pandas only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.schema import require_columns
from analysis.stats import benjamini_hochberg

COLUMNS = ["task", "metric", "n", "a", "b", "diff", "lo", "hi", "p_value", "q_value", "test", "a_only", "b_only"]
NEEDS = ("task", "example_id", "exact", "answer_logprob", "run_id", "step")


def _checkpoint(instances: pd.DataFrame, run_id: str, step: int | None) -> pd.DataFrame:
    """The rows of one checkpoint (`step` None: the run's last); ValueError naming what there is otherwise."""
    rows = instances[instances["run_id"].astype(str) == str(run_id)]
    if rows.empty:
        runs = sorted(instances["run_id"].astype(str).unique())
        raise ValueError(f"no per-example rows for run {run_id!r}; runs with rows: {', '.join(runs[:8])}"
                         + (f" and {len(runs) - 8} more" if len(runs) > 8 else ""))
    steps = sorted(int(s) for s in rows["step"].dropna().unique())
    if step is None:
        step = steps[-1]
    if int(step) not in steps:
        raise ValueError(f"run {run_id!r} has no per-example rows at step {step}; its steps: "
                         f"{', '.join(map(str, steps))}")
    return rows[rows["step"] == int(step)]


def _require_instances(instances: pd.DataFrame) -> None:
    require_columns(instances, NEEDS, "the per-example table",
                    "probe the checkpoints with this version of emergence (`emergence probe RUN_DIR`)")


def _mcnemar(ea: np.ndarray, eb: np.ndarray) -> tuple[int, int, float]:
    """(A right and B wrong, B right and A wrong, McNemar's exact two-sided p) of paired booleans."""
    a_only, b_only = int((ea & ~eb).sum()), int((eb & ~ea).sum())
    p = stats.binomtest(b_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return a_only, b_only, float(p)


def _bootstrap(d: np.ndarray, n_boot: int, rng) -> tuple[float, float]:
    """Percentile 95% interval of the mean of paired differences `d`, examples resampled."""
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _sign_flip_p(d: np.ndarray, n_perm: int, rng) -> float:
    """Two-sided p of a mean paired difference by random sign flips (the observed sign pattern counted once)."""
    observed = abs(d.mean())
    flips = rng.choice([-1.0, 1.0], size=(n_perm, len(d)))
    extreme = int((np.abs((flips * d).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (n_perm + 1)


def compare_checkpoints(instances: pd.DataFrame, a: tuple[str, int | None], b: tuple[str, int | None],
                        task: str | None = None, n_boot: int = 2000, n_perm: int = 10000,
                        seed: int = 0) -> pd.DataFrame:
    """One row per (task, metric) that both checkpoints were probed on: `n` examples in common, `a` and `b` (each
    checkpoint's mean on them), `diff` = b - a with its paired-bootstrap 95% interval `lo`, `hi`, `p_value` (McNemar
    exact for exact_match, sign flips for answer_logprob), `q_value` (Benjamini-Hochberg across tasks, within a
    metric), `test`, and for exact_match the discordant counts `a_only` (A right, B wrong) and `b_only`.
    `a`, `b`: (run_id, step), step None for the run's last checkpoint. ValueError (one line) on a missing column,
    run, step or task, or when the two checkpoints share no example."""
    _require_instances(instances)
    left, right = _checkpoint(instances, *a), _checkpoint(instances, *b)
    if task is not None:
        tasks = sorted(set(left["task"].astype(str)) | set(right["task"].astype(str)))
        if task not in tasks:
            raise ValueError(f"no per-example rows for task {task!r} at these checkpoints; tasks: {', '.join(tasks)}")
        left, right = left[left["task"] == task], right[right["task"] == task]
    paired = left.merge(right, on=["task", "example_id"], suffixes=("_a", "_b"))
    if paired.empty:
        raise ValueError("the two checkpoints share no example (were they probed on the same probe set?)")
    rng = np.random.default_rng(seed)
    rows = []
    for name, g in paired.groupby("task", sort=True):
        ea, eb = g["exact_a"].astype(bool).to_numpy(), g["exact_b"].astype(bool).to_numpy()
        a_only, b_only, p = _mcnemar(ea, eb)
        d = eb.astype(float) - ea.astype(float)
        rows.append({"task": name, "metric": "exact_match", "n": len(g), "a": ea.mean(), "b": eb.mean(),
                     "diff": d.mean(), **dict(zip(("lo", "hi"), _bootstrap(d, n_boot, rng))), "p_value": p,
                     "test": "McNemar exact", "a_only": a_only, "b_only": b_only})
        la, lb = g["answer_logprob_a"].to_numpy(float), g["answer_logprob_b"].to_numpy(float)
        ok = np.isfinite(la) & np.isfinite(lb)
        if ok.sum() >= 2:
            d = lb[ok] - la[ok]
            rows.append({"task": name, "metric": "answer_logprob", "n": int(ok.sum()), "a": la[ok].mean(),
                         "b": lb[ok].mean(), "diff": d.mean(), **dict(zip(("lo", "hi"), _bootstrap(d, n_boot, rng))),
                         "p_value": 1.0 if not d.any() else _sign_flip_p(d, n_perm, rng),
                         "test": "sign-flip permutation", "a_only": pd.NA, "b_only": pd.NA})
    out = pd.DataFrame(rows)
    out["q_value"] = np.nan
    for _, idx in out.groupby("metric").groups.items():
        out.loc[idx, "q_value"] = benjamini_hochberg(out.loc[idx, "p_value"].to_numpy(float))
    return out[COLUMNS]


CHANGE_COLUMNS = ["run_id", "task", "step_a", "step_b", "n", "a", "b", "diff", "a_only", "b_only", "p_value",
                  "q_value"]


def consecutive_changes(instances: pd.DataFrame) -> pd.DataFrame:
    """Every run's consecutive checkpoints, paired on their examples: one row per (run_id, task, step_a, step_b)
    with the exact-match difference, McNemar's exact p-value and its Benjamini-Hochberg q across every pair of the
    table (the family the report marks from). Pairs without a common example are left out."""
    _require_instances(instances)
    df = instances.dropna(subset=["step"]).assign(step=lambda d: d["step"].astype(int),
                                                   exact=lambda d: d["exact"].astype(bool))
    keys = ["run_id", "task", "example_id", "step"]
    wide = (df.drop_duplicates(keys).set_index(keys)["exact"].astype("float64")  # 1/0, NaN where not probed
            .unstack("step"))
    rows = []
    for (run, task), g in wide.groupby(level=["run_id", "task"], sort=True):
        values = g.to_numpy(float)  # examples x steps: 1, 0, or NaN where that checkpoint was not probed
        probed = [j for j in range(values.shape[1]) if np.isfinite(values[:, j]).any()]
        for j0, j1 in zip(probed, probed[1:]):
            both = np.isfinite(values[:, j0]) & np.isfinite(values[:, j1])
            if not both.any():
                continue
            ea, eb = values[both, j0] > 0.5, values[both, j1] > 0.5
            a_only, b_only, p = _mcnemar(ea, eb)
            rows.append({"run_id": run, "task": task, "step_a": int(g.columns[j0]), "step_b": int(g.columns[j1]),
                         "n": int(both.sum()), "a": ea.mean(), "b": eb.mean(), "diff": eb.mean() - ea.mean(),
                         "a_only": a_only, "b_only": b_only, "p_value": p})
    out = pd.DataFrame(rows, columns=CHANGE_COLUMNS[:-1])
    out["q_value"] = benjamini_hochberg(out["p_value"].to_numpy(float))
    return out
