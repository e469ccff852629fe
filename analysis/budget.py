"""Does a jump mark a capacity, or the end of the token budget? The same sizes trained at a larger budget answer it.

A transition across sizes at one budget may only say which sizes learn the task within that budget (Lu et al. 2023,
"Are Emergent Abilities in Large Language Models just In-Context Learning?", on capacity against training length).
`budget_shift(base, more)` takes a sweep and a second sweep of some of its sizes trained on more tokens, and, for
every all-or-nothing metric (exact match and the like) and every size both hold, counts the runs whose last
checkpoint acquired the ability under each budget, with Wilson 95% intervals and Fisher's exact test of the
difference. A run has acquired it when its final value lies above the cut between the two levels of both sweeps'
final values pooled (the cut that best splits them in two groups, as `per_run` does): one cut for both budgets, so
a metric that never varies under the base budget (every run on the floor) is still compared with the larger one.
`MORE` must have trained on more tokens than `BASE` (`BudgetOrderError` otherwise).

`emergent_budget(table, task, metric)` says in a few words what the check found for one flagged row: whether its
transition moved with the budget, and where it was checked.

If the share at a size rises with the budget, the transition moves to smaller sizes with more tokens: the jump
marks the budget as much as the capacity. If it does not, the sentence says how large a shift the runs could have
missed (the interval of the difference), never that there is none.

This module imports numpy, pandas and scipy only (and the analysis package).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis import schema
from analysis.perrun import level_cut
from analysis.stats import wilson
from analysis.fmt import sentence as fmt

COLUMNS = ["task", "metric", "n_params", "model", "tokens_base", "tokens_more", "acquired_base", "runs_base",
           "share_base", "share_base_lo", "share_base_hi", "acquired_more", "runs_more", "share_more",
           "share_more_lo", "share_more_hi", "p_value", "cut", "moves", "evidence"]


class BudgetOrderError(ValueError):
    """The sweep given as the larger budget trained on no more tokens than the base sweep."""


def budget_shift(base: pd.DataFrame, more: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (task, all-or-nothing metric, size in both tables): runs that acquired the ability at each budget,
    their shares with Wilson 95% intervals, Fisher's exact p of "the same share", `moves` (True where p < alpha:
    more runs acquire it with more tokens, or fewer) and one sentence.

    Raises BudgetOrderError where a size both tables hold trained on no more tokens in `more` than in `base`."""
    a, b = schema.final_measured(base), schema.final_measured(more)  # one checkpoint per run: its tokens, its budget
    ta_all, tb_all = a.groupby("n_params")["tokens"].median(), b.groupby("n_params")["tokens"].median()
    shared = ta_all.index.intersection(tb_all.index)
    if len(shared) and (tb_all[shared] <= ta_all[shared]).any():
        n = next(int(k) for k in shared if tb_all[k] <= ta_all[k])
        raise BudgetOrderError(f"the second sweep trained on no more tokens than the first at n_params = {n} "
                               f"({fmt(tb_all[n])} against {fmt(ta_all[n])}): give the base sweep first and the "
                               "longer one second")
    rows = []
    for (task, metric), ga in a.groupby(["task", "metric"], sort=True):
        info = schema.METRICS.get(metric)
        if info is None or not info.discontinuous:
            continue
        gb = b[(b["task"] == task) & (b["metric"] == metric)]
        if gb.empty:
            continue
        sign = 1.0 if info.higher_is_better else -1.0
        both = sign * np.concatenate([ga["value"].to_numpy(float), gb["value"].to_numpy(float)])
        if both.size < 2 or np.ptp(both) == 0:
            continue
        cut = level_cut(both)
        for n, sa in ga.groupby("n_params"):
            sb = gb[gb["n_params"] == n]
            if sb.empty:
                continue
            ka, ma = int((sign * sa["value"].to_numpy(float) > cut).sum()), len(sa)
            kb, mb = int((sign * sb["value"].to_numpy(float) > cut).sum()), len(sb)
            p = float(stats.fisher_exact([[ka, ma - ka], [kb, mb - kb]])[1])
            la, ha = wilson(ka, ma)
            lb, hb = wilson(kb, mb)
            ta, tb = float(sa["tokens"].median()), float(sb["tokens"].median())
            moves = bool(p < alpha)
            what = (f"{'more' if kb / mb > ka / ma else 'fewer'} runs acquire it with more tokens: the transition "
                    "moves with the budget" if moves else
                    "no shift detected with these runs (the share with more tokens less the share with fewer "
                    f"could be anywhere in [{fmt(lb - ha, 2)}, {fmt(hb - la, 2)}])")
            model = str(sa["model"].iloc[0]) if "model" in sa.columns else ""
            rows.append({
                "task": task, "metric": metric, "n_params": int(n), "model": model, "tokens_base": ta,
                "tokens_more": tb, "acquired_base": ka, "runs_base": ma, "share_base": ka / ma, "share_base_lo": la,
                "share_base_hi": ha, "acquired_more": kb, "runs_more": mb, "share_more": kb / mb,
                "share_more_lo": lb, "share_more_hi": hb, "p_value": p, "cut": sign * cut, "moves": moves,
                "evidence": (f"At {fmt(n)} parameters ({model}), {ka} of {ma} runs acquired {task} {metric} "
                             f"(final value beyond {fmt(sign * cut, 3)}) with {fmt(ta)} tokens and {kb} of {mb} "
                             f"with {fmt(tb)} (Fisher p = {fmt(p, 2)}): {what}."),
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def emergent_budget(table: pd.DataFrame | None, task: str, metric: str) -> str:
    """A few words for one flagged row: "moves with the budget (...)", "no shift detected (...)", or "not checked"
    where `table` (budget.csv) has no size of it."""
    if table is None or not {"task", "metric", "moves", "n_params"} <= set(table.columns):
        return "not checked"
    rows = table[(table["task"].astype(str) == str(task)) & (table["metric"].astype(str) == str(metric))]
    if rows.empty:
        return "not checked"
    moved = rows[rows["moves"].astype(str).str.lower().isin(("true", "1"))]
    shown = moved if len(moved) else rows

    def one(r) -> str:
        return (f"{int(r['acquired_base'])}/{int(r['runs_base'])} to {int(r['acquired_more'])}/{int(r['runs_more'])} "
                f"at {fmt(r['n_params'])}")

    sizes = "; ".join(one(r) for _, r in shown.sort_values("n_params").iterrows())
    budgets = f"{fmt(rows['tokens_base'].median())} to {fmt(rows['tokens_more'].median())} tokens"
    if len(moved):
        return f"moves with the budget: {sizes} ({budgets}, Fisher p < 0.05)"
    return f"no shift detected: {sizes} ({budgets})"
