"""Does a jump mark a capacity, or the end of the token budget? The same sizes trained at a larger budget answer it.

A transition across sizes at one budget may only say which sizes learn the task within that budget (Lu et al. 2023,
"Are Emergent Abilities in Large Language Models just In-Context Learning?", on capacity against training length).
`budget_shift(base, more)` takes a sweep and a second sweep of some of its sizes trained on more tokens, and, for
every all-or-nothing metric (exact match and the like) and every size both hold, counts the runs whose last
checkpoint acquired the ability under each budget, with Wilson 95% intervals and Fisher's exact test of the
difference. A run has acquired it when its final value lies above the cut between the two levels of the base
sweep's final values (the cut that best splits them in two groups, as `per_run` does).

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
from analysis.jumps import level_cut, wilson
from analysis.fmt import sentence as fmt

COLUMNS = ["task", "metric", "n_params", "model", "tokens_base", "tokens_more", "acquired_base", "runs_base",
           "share_base", "share_base_lo", "share_base_hi", "acquired_more", "runs_more", "share_more",
           "share_more_lo", "share_more_hi", "p_value", "cut", "moves", "evidence"]


def budget_shift(base: pd.DataFrame, more: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (task, all-or-nothing metric, size in both tables): runs that acquired the ability at each budget,
    their shares with Wilson 95% intervals, Fisher's exact p of "the same share", `moves` (True where p < alpha:
    more runs acquire it with more tokens, or fewer) and one sentence."""
    a, b = schema.final_measured(base), schema.final_measured(more)  # one checkpoint per run: its tokens, its budget
    rows = []
    for (task, metric), ga in a.groupby(["task", "metric"], sort=True):
        info = schema.METRICS.get(metric)
        if info is None or not info.discontinuous:
            continue
        gb = b[(b["task"] == task) & (b["metric"] == metric)]
        if gb.empty:
            continue
        sign = 1.0 if info.higher_is_better else -1.0
        ya = sign * ga["value"].to_numpy(float)
        if ya.size < 2 or np.ptp(ya) == 0:
            continue
        cut = level_cut(ya)
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
